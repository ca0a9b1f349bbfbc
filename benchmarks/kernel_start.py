"""Kernel create → first execute, 5 and 16 concurrent creates, destroy: Berth vs raw Docker.

Berth runs as a real agent process (`berth start-server`) driven over RPC with CurveZMQ by
`berth.client.AgentClient`, as a Manager would. The baseline is the Docker CLI on the same
image: `docker run -d --init` + the first `docker exec python3 -c pass` (ready), and
`docker rm -f` (destroy); N concurrent: N of those at once. The two sides alternate which goes
first. Medians and p95 (sequential runs), ratios Berth / baseline. Also reports the agent's
idle RSS/CPU and CPU per kernel lifecycle.

Every kernel asks cpu=1, mem=256m. The agent runs with `cpu-overcommit-ratio` = 8, so 16 of
them fit the 2-core machine with each one's CFS quota still a whole core (the raw containers
have no limits at all; without overcommit 16 kernels would get 0.12 of a core each).

    .venv/bin/python benchmarks/kernel_start.py --runs 10 --concurrent-runs 3
"""

from __future__ import annotations

import asyncio
import statistics
import time
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

import bench_common as bc

CONCURRENCY = (5, 16)
OVERCOMMIT = 8  # 16 kernels x cpu=1 on 2 cores


# ---------------------------------------------------------------- one kernel
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


# ---------------------------------------------------------------- N at once
async def berth_many(agent: bc.AgentProcess, n: int) -> dict[str, float]:
    kids = [bc.new_id() for _ in range(n)]

    async def ready(kid: str) -> None:
        await agent.client.create_kernels(kid, [kid], [bc.kernel_config()], {})
        await first_execute(agent, kid)

    t0 = time.perf_counter()
    outcomes = await asyncio.gather(*(ready(k) for k in kids), return_exceptions=True)
    t1 = time.perf_counter()
    await asyncio.gather(*(agent.client.destroy_kernel(k, k) for k in kids),
                         return_exceptions=True)
    t2 = time.perf_counter()
    if failed := [o for o in outcomes if isinstance(o, BaseException)]:
        raise RuntimeError(f"{len(failed)} of {n} concurrent creates failed: {failed[0]!r}")
    return {"all_ready": t1 - t0, "all_destroyed": t2 - t1}


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


Run = Callable[[], Awaitable[dict[str, float]]]


async def interleaved(runs: int, berth: Run, base: Run
                      ) -> tuple[list[dict[str, float]], list[dict[str, float]]]:
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


# ---------------------------------------------------------------- figures
def stats(samples: Sequence[float]) -> dict[str, float]:
    """bench_common's summary plus the 95th percentile (interpolated between samples)."""
    s = bc.summary(samples)
    ms = sorted(x * 1000 for x in samples)
    p95 = statistics.quantiles(ms, n=20, method="inclusive")[-1] if len(ms) > 1 else ms[0]
    return {**s, "p95_ms": round(p95, 2)}


def pair(b_runs: list[dict[str, float]], d_runs: list[dict[str, float]],
         key: str) -> dict[str, Any]:
    b, d = stats([r[key] for r in b_runs]), stats([r[key] for r in d_runs])
    return {"berth": b, "docker": d,
            "ratio": {"median": round(b["median_ms"] / d["median_ms"], 3),
                      "p95": round(b["p95_ms"] / d["p95_ms"], 3)}}


def with_agent_settings(creation_concurrency: int | None) -> Callable[[str], str]:
    def edit(text: str) -> str:
        text = text.replace("reserved-cpu = 0",
                            f"reserved-cpu = 0\ncpu-overcommit-ratio = {OVERCOMMIT}", 1)
        if creation_concurrency is not None:
            text = text.replace("[agent]\n", "[agent]\nkernel-creation-concurrency = "
                                f"{creation_concurrency}\n", 1)
        return text
    return edit


async def main(runs: int, concurrent_runs: int, idle_s: float,
               creation_concurrency: int | None) -> dict[str, Any]:
    bc.require_images(bc.PYTHON_IMAGE)
    async with bc.agent_process(edit_toml=with_agent_settings(creation_concurrency)) as agent:
        idle_figures = await idle(agent, idle_s)
        await berth_one(agent)  # warm-up of both sides, not counted
        await docker_one()
        cpu0 = agent.cpu_seconds()
        b_seq, d_seq = await interleaved(runs, lambda: berth_one(agent), docker_one)
        cpu_per_kernel = (agent.cpu_seconds() - cpu0) / runs
        concurrent: dict[str, Any] = {}
        raw: dict[str, Any] = {"berth_sequential": b_seq, "docker_sequential": d_seq}
        for n in CONCURRENCY:
            def b_many(n: int = n) -> Awaitable[dict[str, float]]:
                return berth_many(agent, n)

            def d_many(n: int = n) -> Awaitable[dict[str, float]]:
                return docker_many(n)

            b_con, d_con = await interleaved(concurrent_runs, b_many, d_many)
            concurrent[str(n)] = {k: pair(b_con, d_con, k) for k in ("all_ready", "all_destroyed")}
            raw[f"berth_concurrent_{n}"], raw[f"docker_concurrent_{n}"] = b_con, d_con
        rss_after = round(agent.rss_bytes() / 2**20, 1)
    return {
        "mode": "agent process (berth start-server) over RPC with CurveZMQ",
        "runs": runs, "concurrent_runs": concurrent_runs,
        "kernel": {"cpu": "1", "mem": "256m", "cpu_overcommit_ratio": OVERCOMMIT,
                   "kernel_creation_concurrency": creation_concurrency or "agent default"},
        "sequential": {k: pair(b_seq, d_seq, k) for k in ("create", "create_exec", "destroy")},
        "concurrent": concurrent,
        "agent": {"idle": idle_figures, "rss_mib_after_runs": rss_after,
                  "cpu_seconds_per_kernel_lifecycle": round(cpu_per_kernel, 3)},
        "raw": raw,
    }


def _cell(s: dict[str, float]) -> str:
    return f"{s['median_ms']:.1f} ms (p95 {s['p95_ms']:.1f})"


def rows(r: dict[str, Any]) -> list[tuple[str, str, str, str]]:
    labels = {"create": "create → ready (RPC returns; docker run -d)",
              "create_exec": "create → first execute done (docker run + exec)",
              "destroy": "destroy (docker rm -f)"}
    out = []
    for key, p in r["sequential"].items():
        out.append((labels[key], _cell(p["berth"]), _cell(p["docker"]),
                    f"{p['ratio']['median']:.2f}× (p95 {p['ratio']['p95']:.2f}×)"))
    for n, group in r["concurrent"].items():
        for key, label in (("all_ready", f"{n} concurrent creates, all executed once"),
                           ("all_destroyed", f"{n} concurrent destroys")):
            p = group[key]
            out.append((label, bc.fmt(p["berth"]), bc.fmt(p["docker"]),
                        f"{p['ratio']['median']:.2f}×"))
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
    p.add_argument("--creation-concurrency", type=int, default=None,
                   help="the agent's kernel-creation-concurrency (default: the agent's own)")
    args = p.parse_args()
    bc.run_and_emit("kernel_start", main(args.runs, args.concurrent_runs, args.idle_seconds, args.creation_concurrency), rows, args.out)
