"""Warm-pool create vs `docker run -d` of the same image, interleaved.

Berth runs as a real agent process with `[warm-pool]` keeping berth/python:3.11 full; the
measure is the `create_kernels` RPC, which returns with the kernel ready (its runner answers).
The baseline is `docker run -d --init` of the same image (the container started, nothing
ready inside). Before every timed operation, on both sides, the pool is full and settled, so
its background refill never overlaps a measure. A create the pool did not serve is counted
as a miss and reported (the target assumes none).

    .venv/bin/python benchmarks/warm_pool.py --runs 10
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

import bench_common as bc

POOL_SIZE = 2
WARM_TOML = f"""
[warm-pool]
images = {{ "{bc.PYTHON_IMAGE}" = {POOL_SIZE} }}
max-total = {POOL_SIZE}
cpu = 0.25
mem = "128m"
reserve-cpu = 0.5
reserve-mem = "256m"
refill-interval-sec = 0.5
"""
SETTLE_S = 1.0  # after the pool is full again: the newest member's runner is up


def summary(samples: list[float]) -> dict[str, float]:
    """bench_common's summary plus the 95th percentile."""
    out = bc.summary(samples)
    ms = sorted(s * 1000 for s in samples)
    out["p95_ms"] = round(ms[min(len(ms) - 1, round(0.95 * (len(ms) - 1)))], 2)
    return out


async def pool_members(agent_id: str) -> list[str]:
    """Idle members: pool containers not yet renamed to a kernel's name."""
    out = await bc.docker("ps", "-q", "--filter", f"label=ai.backend.owner={agent_id}",
                          "--filter", "label=berth.warm-pool", "--filter", "name=berth-warm.")
    return out.split()


async def settled(agent: bc.AgentProcess, timeout: float = 120.0) -> None:
    deadline = time.monotonic() + timeout
    while len(await pool_members(agent.agent_id)) < POOL_SIZE:
        if time.monotonic() > deadline:
            raise RuntimeError("the warm pool did not refill in time")
        await asyncio.sleep(0.1)
    await asyncio.sleep(SETTLE_S)


async def berth_one(agent: bc.AgentProcess) -> tuple[float, bool]:
    await settled(agent)
    kid = bc.new_id()
    t0 = time.perf_counter()
    reply = await agent.client.create_kernels(
        kid, [kid], [bc.kernel_config(cpu="0.5", mem="192m")], {})
    t1 = time.perf_counter()
    cid = reply[0]["container_id"]
    labels = await bc.docker("inspect", "-f", '{{index .Config.Labels "berth.warm-pool"}}', cid)
    await agent.client.destroy_kernel(kid, kid)
    return t1 - t0, bool(labels.strip())


async def docker_one(agent: bc.AgentProcess) -> float:
    await settled(agent)
    t0 = time.perf_counter()
    cid = await bc.docker_run(bc.PYTHON_IMAGE, "sleep", "infinity")
    t1 = time.perf_counter()
    await bc.docker("rm", "-f", cid)
    return t1 - t0


async def main(runs: int) -> dict[str, Any]:
    bc.require_images(bc.PYTHON_IMAGE)
    async with bc.agent_process(extra_toml=WARM_TOML) as agent:
        await berth_one(agent)  # warm-up of both sides, not counted
        await docker_one(agent)
        berth: list[float] = []
        base: list[float] = []
        hits = 0
        for i in range(runs):
            order = (0, 1) if i % 2 == 0 else (1, 0)
            for side in order:
                if side == 0:
                    seconds, hit = await berth_one(agent)
                    berth.append(seconds)
                    hits += hit
                else:
                    base.append(await docker_one(agent))
    b, d = summary(berth), summary(base)
    return {
        "mode": "agent process (berth start-server) over RPC with CurveZMQ, [warm-pool] "
                f"{bc.PYTHON_IMAGE} x{POOL_SIZE}",
        "runs": runs, "pool_hits": hits, "pool_misses": runs - hits,
        "create": {"berth_warm": b, "docker_run": d,
                   "ratio_median": bc.ratio(b, d),
                   "ratio_p95": round(b["p95_ms"] / d["p95_ms"], 3)},
        "target_ratio": 0.3,
        "raw": {"berth_warm_s": berth, "docker_run_s": base},
    }


def rows(r: dict[str, Any]) -> list[tuple[str, str, str, str]]:
    c = r["create"]
    b, d = c["berth_warm"], c["docker_run"]
    return [
        ("warm-pool create → ready (docker run -d), median", bc.fmt(b), bc.fmt(d),
         f"{c['ratio_median']:.2f}×"),
        ("warm-pool create → ready (docker run -d), p95", f"{b['p95_ms']:.1f} ms",
         f"{d['p95_ms']:.1f} ms", f"{c['ratio_p95']:.2f}×"),
        ("creates served by the pool", f"{r['pool_hits']} of {r['runs']}", "-", "-"),
    ]


if __name__ == "__main__":
    args = bc.parser(__doc__.splitlines()[0], default_runs=10).parse_args()
    bc.run_and_emit("warm_pool", main(args.runs), rows, args.out)
