"""Kernel create → ready, 5 concurrent creates, destroy: Berth vs raw Docker, interleaved.

Berth runs as a real agent process (`berth start-server`) driven over RPC with CurveZMQ by
`berth.client.AgentClient`, as a Manager would. The baseline is the Docker CLI on the same
image: `docker run -d --init` + the first `docker exec python3 -c pass` (ready), and
`docker rm -f` (destroy). Also reports the agent's idle RSS/CPU and CPU per kernel lifecycle.

    .venv/bin/python benchmarks/kernel_start.py --runs 10
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

import bench_common as bc

CONCURRENT = 5


async def berth_one(agent: bc.AgentProcess) -> dict[str, float]:
    kid = bc.new_id()
    t0 = time.perf_counter()
    await agent.client.create_kernels(kid, [kid], [bc.kernel_config()], {})
    t1 = time.perf_counter()
    await first_execute(agent, kid)
    t2 = time.perf_counter()
    await agent.client.destroy_kernel(kid, kid)
    t3 = time.perf_counter()
    return {"create": t1 - t0, "create_exec": t2 - t0, "destroy": t3 - t2}


async def first_execute(agent: bc.AgentProcess, kid: str) -> None:
    result = await agent.client.execute(kid, kid, 2, bc.new_id(), "query", "pass", {})
    if result["status"] != "finished" or result["exitCode"] != 0:
        raise RuntimeError(f"first execute failed: {result}")


async def docker_one() -> dict[str, float]:
    t0 = time.perf_counter()
    cid = await bc.docker_run(bc.PYTHON_IMAGE, "sleep", "infinity")
    t1 = time.perf_counter()
    await bc.docker("exec", cid, "python3", "-c", "pass")
    t2 = time.perf_counter()
    await bc.docker("rm", "-f", cid)
    t3 = time.perf_counter()
    return {"create": t1 - t0, "create_exec": t2 - t0, "destroy": t3 - t2}


async def berth_many(agent: bc.AgentProcess, n: int) -> dict[str, float]:
    kids = [bc.new_id() for _ in range(n)]
    cpu = str(round(2.0 / n, 2))  # fits 2 cores: the agent refuses overcommit

    async def ready(kid: str) -> None:
        await agent.client.create_kernels(kid, [kid], [bc.kernel_config(cpu=cpu)], {})
        await first_execute(agent, kid)

    t0 = time.perf_counter()
    await asyncio.gather(*(ready(k) for k in kids))
    t1 = time.perf_counter()
    await asyncio.gather(*(agent.client.destroy_kernel(k, k) for k in kids))
    return {"all_ready": t1 - t0, "all_destroyed": time.perf_counter() - t1}


async def docker_many(n: int) -> dict[str, float]:
    async def ready() -> str:
        cid = await bc.docker_run(bc.PYTHON_IMAGE, "sleep", "infinity")
        await bc.docker("exec", cid, "python3", "-c", "pass")
        return cid

    t0 = time.perf_counter()
    cids = await asyncio.gather(*(ready() for _ in range(n)))
    t1 = time.perf_counter()
    await asyncio.gather(*(bc.docker("rm", "-f", c) for c in cids))
    return {"all_ready": t1 - t0, "all_destroyed": time.perf_counter() - t1}


async def interleaved(runs: int, berth: Any, base: Any) -> tuple[list[dict[str, float]],
                                                                 list[dict[str, float]]]:
    """Alternate which side goes first so drift and cache warmth hit both alike."""
    b_runs, d_runs = [], []
    for i in range(runs):
        if i % 2 == 0:
            b_runs.append(await berth())
            d_runs.append(await base())
        else:
            d_runs.append(await base())
            b_runs.append(await berth())
    return b_runs, d_runs


async def idle(agent: bc.AgentProcess, seconds: float) -> dict[str, float]:
    await asyncio.sleep(2.0)  # let startup settle
    cpu0, t0 = agent.cpu_seconds(), time.perf_counter()
    await asyncio.sleep(seconds)
    cpu1, t1 = agent.cpu_seconds(), time.perf_counter()
    return {"rss_mib": round(agent.rss_bytes() / 2**20, 1),
            "cpu_percent_of_core": round(100 * (cpu1 - cpu0) / (t1 - t0), 2),
            "window_s": round(t1 - t0, 1)}


def col(runs: list[dict[str, float]], key: str) -> dict[str, float]:
    return bc.summary([r[key] for r in runs])


async def main(runs: int, concurrent_runs: int, idle_s: float) -> dict[str, Any]:
    bc.require_images(bc.PYTHON_IMAGE)
    async with bc.agent_process() as agent:
        idle_figures = await idle(agent, idle_s)
        await berth_one(agent)  # warm-up of both sides, not counted
        await docker_one()
        cpu0 = agent.cpu_seconds()
        b_seq, d_seq = await interleaved(runs, lambda: berth_one(agent), docker_one)
        cpu_per_kernel = (agent.cpu_seconds() - cpu0) / runs
        b_con, d_con = await interleaved(concurrent_runs, lambda: berth_many(agent, CONCURRENT),
                                         lambda: docker_many(CONCURRENT))
        rss_after = round(agent.rss_bytes() / 2**20, 1)
    return {
        "mode": "agent process (berth start-server) over RPC with CurveZMQ",
        "runs": runs, "concurrent_runs": concurrent_runs,
        "sequential": {k: {"berth": col(b_seq, k), "docker": col(d_seq, k)}
                       for k in ("create", "create_exec", "destroy")},
        "concurrent": {k: {"berth": col(b_con, k), "docker": col(d_con, k)}
                       for k in ("all_ready", "all_destroyed")},
        "agent": {"idle": idle_figures, "rss_mib_after_runs": rss_after,
                  "cpu_seconds_per_kernel_lifecycle": round(cpu_per_kernel, 3)},
        "raw": {"berth_sequential": b_seq, "docker_sequential": d_seq,
                "berth_concurrent": b_con, "docker_concurrent": d_con},
    }


def rows(r: dict[str, Any]) -> list[tuple[str, str, str, str]]:
    labels = {"create": "create → ready (RPC returns; docker run -d)",
              "create_exec": "create → first execute done (docker run + exec)",
              "destroy": "destroy (docker rm -f)",
              "all_ready": f"{CONCURRENT} concurrent creates, all executed once",
              "all_destroyed": f"{CONCURRENT} concurrent destroys"}
    out = []
    for group in ("sequential", "concurrent"):
        for key, pair in r[group].items():
            out.append((labels[key], bc.fmt(pair["berth"]), bc.fmt(pair["docker"]),
                        f"{bc.ratio(pair['berth'], pair['docker']):.2f}×"))
    a = r["agent"]
    out.append(("agent idle RSS", f"{a['idle']['rss_mib']} MiB", "-", "-"))
    out.append(("agent idle CPU", f"{a['idle']['cpu_percent_of_core']} % of a core", "-", "-"))
    out.append(("agent CPU per kernel lifecycle", f"{a['cpu_seconds_per_kernel_lifecycle']} s",
                "-", "-"))
    return out


if __name__ == "__main__":
    p = bc.parser(__doc__.splitlines()[0], default_runs=10)
    p.add_argument("--concurrent-runs", type=int, default=3)
    p.add_argument("--idle-seconds", type=float, default=10.0)
    args = p.parse_args()
    try:
        result = asyncio.run(main(args.runs, args.concurrent_runs, args.idle_seconds))
    finally:
        left = bc.sweep_containers()
    if left:
        raise SystemExit(f"{left} baseline container(s) were left and have been removed")
    bc.emit("kernel_start", rows(result), result, args.out)
