"""Destroy: Berth's `destroy_kernel` RPC vs `docker rm -f`, interleaved, sequential and concurrent.

Each sample first makes a ready kernel (Berth: `create_kernels` + a first `execute`; baseline:
`docker run -d --init` + a first `docker exec`) without timing it, then times only its end:
the `destroy_kernel` RPC (a real agent process over CurveZMQ, returns once the kernel is
TERMINATED: container, scratch, ports and slots gone) against `docker rm -f` (Docker CLI).
The kernel's image declares one service, so its container has one published port, which the
plain baseline has not; a second baseline, interleaved too, publishes one port the same way
(`-p 127.0.0.1::8080`) to show what Docker's own port teardown costs. Optionally the agent
ships container output to Redis (`--log-sink`), as with a Manager.

    .venv/bin/python benchmarks/destroy.py --runs 20
"""

from __future__ import annotations

import asyncio
import statistics
import time
from typing import Any

import bench_common as bc

CONCURRENT = 5


async def berth_ready(agent: bc.AgentProcess, n: int) -> list[str]:
    kids = [bc.new_id() for _ in range(n)]
    cpu = str(round(2.0 / n, 2)) if n > 1 else "1"  # fits 2 cores: the agent refuses overcommit

    async def one(kid: str) -> None:
        await agent.client.create_kernels(kid, [kid], [bc.kernel_config(cpu=cpu)], {})
        result = await agent.client.execute(kid, kid, 2, bc.new_id(), "query", "pass", {})
        if result["status"] != "finished":
            raise RuntimeError(f"first execute failed: {result}")
    await asyncio.gather(*(one(k) for k in kids))
    return kids


async def berth_destroy(agent: bc.AgentProcess, n: int) -> float:
    kids = await berth_ready(agent, n)
    await asyncio.sleep(0.2)  # let the create's aftermath settle, as for the baseline
    t0 = time.perf_counter()
    await asyncio.gather(*(agent.client.destroy_kernel(k, k) for k in kids))
    return time.perf_counter() - t0


async def docker_destroy(n: int, *publish: str) -> float:
    async def ready() -> str:
        cid = await bc.docker("run", "-d", "--init", "--label", bc.TEST_LABEL, "--label",
                              bc.BENCH_LABEL, *publish, bc.PYTHON_IMAGE, "sleep", "infinity")
        await bc.docker("exec", cid, "python3", "-c", "pass")
        return cid
    cids = await asyncio.gather(*(ready() for _ in range(n)))
    await asyncio.sleep(0.2)
    t0 = time.perf_counter()
    await asyncio.gather(*(bc.docker("rm", "-f", c) for c in cids))
    return time.perf_counter() - t0


def stats(samples: list[float]) -> dict[str, float]:
    ms = sorted(s * 1000 for s in samples)
    p95 = ms[min(len(ms) - 1, round(0.95 * (len(ms) - 1)))]
    return {**bc.summary(samples), "p95_ms": round(p95, 2),
            "mean_ms": round(statistics.fmean(ms), 2)}


async def measure(agent: bc.AgentProcess, runs: int, n: int) -> dict[str, Any]:
    sides = {"berth": lambda: berth_destroy(agent, n), "docker": lambda: docker_destroy(n),
             "docker_port": lambda: docker_destroy(n, "-p", "127.0.0.1::8080")}
    samples: dict[str, list[float]] = {k: [] for k in sides}
    order = list(sides)
    for i in range(runs):  # the side that goes first rotates
        for k in order[i % 3:] + order[:i % 3]:
            samples[k].append(await sides[k]())
    return {**{k: stats(v) for k, v in samples.items()}, "raw": samples}


async def main(runs: int, concurrent_runs: int, log_sink: bool) -> dict[str, Any]:
    bc.require_images(bc.PYTHON_IMAGE)
    extra = '\n[redis]\naddr = "127.0.0.1:6379"\n' if log_sink else ""
    async with bc.agent_process(extra_toml=extra) as agent:
        await berth_destroy(agent, 1)  # warm-up of both sides, not counted
        await docker_destroy(1)
        seq = await measure(agent, runs, 1)
        con = await measure(agent, concurrent_runs, CONCURRENT)
    return {"mode": "agent process (berth start-server) over RPC with CurveZMQ",
            "log_sink": "redis" if log_sink else None, "runs": runs,
            "concurrent_runs": concurrent_runs, "sequential": seq, "concurrent": con}


def rows(r: dict[str, Any]) -> list[tuple[str, str, str, str]]:
    out = []
    for key, label in (("sequential", "destroy (docker rm -f)"),
                       ("concurrent", f"{CONCURRENT} concurrent destroys")):
        b, d, dp = r[key]["berth"], r[key]["docker"], r[key]["docker_port"]
        out.append((f"{label}, median", bc.fmt(b), bc.fmt(d), f"{bc.ratio(b, d):.2f}×"))
        out.append((f"{label}, p95", f"{b['p95_ms']:.0f} ms", f"{d['p95_ms']:.0f} ms",
                    f"{b['p95_ms'] / d['p95_ms']:.2f}×"))
        out.append((f"{label}, median, baseline with one published port", bc.fmt(b),
                    bc.fmt(dp), f"{bc.ratio(b, dp):.2f}×"))
    return out


if __name__ == "__main__":
    p = bc.parser(__doc__.splitlines()[0], default_runs=20)
    p.add_argument("--concurrent-runs", type=int, default=4)
    p.add_argument("--log-sink", action="store_true",
                   help="the agent ships container output to Redis (127.0.0.1:6379) as for a "
                        "Manager")
    args = p.parse_args()
    bc.run_and_emit("destroy", main(args.runs, args.concurrent_runs, args.log_sink), rows, args.out)
