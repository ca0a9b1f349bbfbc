"""Dense node: a real agent holding 0 → 100 → 200 → 500 idle kernels, and how healthy it stays.

A real agent process (`berth start-server`, CurveZMQ, real Docker) with
`[resource] cpu-overcommit-ratio` high enough for the target on this host's cores is driven
over RPC as a Manager would. Kernels are created (8 RPCs in flight) up to each level; at each
level, with the kernels idle, it measures the agent's RSS, open descriptors and threads, its
CPU over an idle window (its stats cycles included), the `ping` RPC round trip (sequential,
median and p95), the stats cycle as the agent itself times it (the mean of
`backendai_stat_task_duration_sec{stat_scope="container"}` over the window, scraped from its
/metrics), and a create → destroy of one more kernel. Then every kernel is destroyed through
the agent and a sweep on the agent's owner label removes anything left.

Growth stops early (and says so) if the host's available memory falls under `--min-free-gib`:
other work shares this machine.

    .venv/bin/python benchmarks/scale.py --target 500                 # berth/python:3.11
    .venv/bin/python benchmarks/scale.py --target 500 --image busybox
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import math
import os
import re
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import bench_common as bc
import psutil

from berth.client import AgentClient

IMAGES = {"python": bc.PYTHON_IMAGE, "busybox": bc.BUSYBOX_IMAGE}
LEVELS = (0, 100, 200, 500)
IN_FLIGHT = 8


# ---------------------------------------------------------------- the agent
def _config(root: Path, agent_id: str, rpc_port: int, http_port: int, keys: bc.Keys,
            ratio: int) -> str:
    base = bc._agent_toml(root, agent_id, rpc_port, keys, 0)
    ports = 20000 + os.getpid() % 10 * 1000        # 1,000 host ports below the ephemeral range
    base = re.sub(r"port-range = \[\d+, \d+\]", f"port-range = [{ports}, {ports + 999}]", base)
    base = base.replace("[container]", f'internal-addr = "127.0.0.1:{http_port}"\n\n[container]',
                        1)
    return base.replace("reserved-cpu = 0", f"reserved-cpu = 0\ncpu-overcommit-ratio = {ratio}")


HEAP_DIR: Path | None = None  # --heap: the agent runs under tracemalloc (traced_agent.py)


def heap_snapshot(agent: bc.AgentProcess) -> None:
    """Ask a traced agent for a heap snapshot (written while it runs on)."""
    if HEAP_DIR is not None:
        os.kill(agent.pid, signal.SIGUSR2)


@contextlib.asynccontextmanager
async def scale_agent(ratio: int) -> AsyncIterator[tuple[bc.AgentProcess, int]]:
    root = Path(tempfile.mkdtemp(prefix="berth-scale-"))
    (root / "vfolders").mkdir()
    agent_id = f"scale-{uuid.uuid4().hex[:8]}"
    rpc_port, http_port = bc.free_port(), bc.free_port()
    keys = bc.make_keys(root / "keys")
    config = root / "agent.toml"
    config.write_text(_config(root, agent_id, rpc_port, http_port, keys, ratio))
    berth = [str(Path(sys.executable).parent / "berth")]
    env = dict(os.environ)
    if HEAP_DIR is not None:
        berth = [sys.executable, str(Path(__file__).with_name("traced_agent.py"))]
        env["BERTH_HEAP_DIR"] = str(HEAP_DIR)
    with (root / "stderr.log").open("wb") as stderr:
        proc = await asyncio.create_subprocess_exec(
            *berth, "start-server", "-f", str(config),
            stdout=subprocess.DEVNULL, stderr=stderr, env=env)
    client = AgentClient(f"tcp://127.0.0.1:{rpc_port}", keys.agent.public_key, keys.manager,
                         agent_id=agent_id, timeout=300.0, handshake_timeout=1.0)
    try:
        await bc._connect(client, proc, root, 60.0 if HEAP_DIR is None else 300.0)
        try:
            yield bc.AgentProcess(agent_id, proc.pid, client, root), http_port
        finally:
            await client.__aexit__(None, None, None)
    finally:
        await bc._stop(proc)
        bc._sweep_agent(agent_id)
        shutil.rmtree(root, ignore_errors=True)


# ---------------------------------------------------------------- measures
def container_cycle(http_port: int) -> tuple[float, float]:
    """(sum, count) of the agent's container-scope stat task histogram."""
    timeout = 10 if HEAP_DIR is None else 120  # a traced agent answers slowly
    with urllib.request.urlopen(f"http://127.0.0.1:{http_port}/metrics", timeout=timeout) as r:
        text = r.read().decode()
    got = {}
    for kind in ("sum", "count"):
        m = re.search(rf'backendai_stat_task_duration_sec_{kind}{{[^}}]*stat_scope="container"'
                      rf'[^}}]*}} ([0-9.e+-]+)', text)
        got[kind] = float(m.group(1)) if m else 0.0
    return got["sum"], got["count"]


def pctl(samples: list[float], q: float) -> float:
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


async def ping_latency(agent: bc.AgentProcess, n: int) -> dict[str, float]:
    times = []
    for _ in range(n):
        t0 = time.perf_counter()
        await agent.client.ping()
        times.append(time.perf_counter() - t0)
        await asyncio.sleep(0.02)  # sample across the agent's cycles, not one burst
    ms = [t * 1000 for t in times]
    return {"median_ms": round(statistics.median(ms), 2), "p95_ms": round(pctl(ms, 0.95), 2),
            "max_ms": round(max(ms), 2), "n": n}


async def create_destroy(agent: bc.AgentProcess, config: dict[str, Any], n: int
                         ) -> dict[str, float]:
    creates, destroys = [], []
    for _ in range(n):
        kid = bc.new_id()
        t0 = time.perf_counter()
        await agent.client.create_kernels(kid, [kid], [config], {})
        t1 = time.perf_counter()
        await agent.client.destroy_kernel(kid, kid)
        creates.append(t1 - t0)
        destroys.append(time.perf_counter() - t1)
    return {"create_median_ms": round(statistics.median(creates) * 1000, 1),
            "destroy_median_ms": round(statistics.median(destroys) * 1000, 1), "n": n}


async def measure(agent: bc.AgentProcess, http_port: int, kernels: int, idle_s: float,
                  pings: int, config: dict[str, Any], probes: int) -> dict[str, Any]:
    await asyncio.sleep(5.0)  # let the last creates' work settle
    proc = agent.process
    # RSS before any /metrics scrape (one at 500 kernels renders ~7 MB of text: a peak of its
    # own), and the idle window's CPU without the scrape that closes it
    idle_rss = agent.rss_bytes()
    cyc0, cpu0, t0 = container_cycle(http_port), agent.cpu_seconds(), time.perf_counter()
    await asyncio.sleep(idle_s)
    cpu1, t1 = agent.cpu_seconds(), time.perf_counter()
    cyc1 = container_cycle(http_port)
    cycles = cyc1[1] - cyc0[1]
    figures = {
        "kernels": kernels,
        "rss_mib_before_scrape": round(idle_rss / 2**20, 1),
        "rss_mib": round(agent.rss_bytes() / 2**20, 1),
        "fds": proc.num_fds(), "threads": proc.num_threads(),
        "idle_cpu_percent_of_core": round(100 * (cpu1 - cpu0) / (t1 - t0), 2),
        "stats_cycle_ms": round(1000 * (cyc1[0] - cyc0[0]) / cycles, 1) if cycles else None,
        "stats_cycles_in_window": int(cycles),
        "ping": await ping_latency(agent, pings),
        "create_destroy_one_more": await create_destroy(agent, config, probes),
        "host_available_gib": round(psutil.virtual_memory().available / 2**30, 1),
        "load_average": [round(x, 2) for x in os.getloadavg()],
    }
    heap_snapshot(agent)
    print(f"{kernels:4d} kernels: RSS {figures['rss_mib_before_scrape']} MiB before a /metrics "
          f"scrape, {figures['rss_mib']} MiB after, idle CPU "
          f"{figures['idle_cpu_percent_of_core']} %, ping {figures['ping']['median_ms']}/"
          f"{figures['ping']['p95_ms']} ms, stats cycle {figures['stats_cycle_ms']} ms, "
          f"create/destroy {figures['create_destroy_one_more']['create_median_ms']}/"
          f"{figures['create_destroy_one_more']['destroy_median_ms']} ms, fds {figures['fds']}, "
          f"load {figures['load_average'][0]}", flush=True)
    return figures


# ---------------------------------------------------------------- growth and teardown
async def grow(agent: bc.AgentProcess, kernels: list[str], level: int, config: dict[str, Any],
               min_free: float) -> float:
    """Create kernels until `level` are up; returns the seconds it took. Stops short when the
    host's available memory falls under `min_free` bytes."""
    t0 = time.perf_counter()
    gate = asyncio.Semaphore(IN_FLIGHT)

    async def one() -> None:
        async with gate:
            if psutil.virtual_memory().available < min_free:
                return
            kid = bc.new_id()
            await agent.client.create_kernels(kid, [kid], [config], {})
            kernels.append(kid)
            if len(kernels) % 25 == 0:
                print(f"  {len(kernels)} kernels ({time.perf_counter() - t0:.0f} s, agent RSS "
                      f"{agent.rss_bytes() / 2**20:.1f} MiB)", flush=True)

    await asyncio.gather(*(one() for _ in range(level - len(kernels))))
    return time.perf_counter() - t0


async def destroy_all(agent: bc.AgentProcess, kernels: list[str]) -> float:
    t0 = time.perf_counter()
    gate = asyncio.Semaphore(IN_FLIGHT)

    async def one(kid: str) -> None:
        async with gate:
            await agent.client.destroy_kernel(kid, kid)

    await asyncio.gather(*(one(k) for k in kernels))
    kernels.clear()
    return time.perf_counter() - t0


async def main(args: argparse.Namespace) -> dict[str, Any]:
    image = IMAGES[args.image]
    bc.require_images(image)
    cores = len(os.sched_getaffinity(0))
    # room for the target, the probes and the creates in flight, in whole steps
    ratio = max(1, math.ceil((args.target + args.probes + IN_FLIGHT) * float(args.cpu) / cores))
    config = bc.kernel_config(image, cpu=args.cpu, mem=args.mem)
    levels = [lvl for lvl in LEVELS if lvl < args.target] + [args.target]
    results: list[dict[str, Any]] = []
    kernels: list[str] = []
    stopped_at = None
    async with scale_agent(ratio) as (agent, http_port):
        try:
            for level in levels:
                took = await grow(agent, kernels, level, config, args.min_free_gib * 2**30)
                if len(kernels) < level:
                    stopped_at = len(kernels)
                    print(f"stopped at {stopped_at} kernels: host memory under "
                          f"{args.min_free_gib} GiB available", flush=True)
                figures = await measure(agent, http_port, len(kernels), args.idle_seconds,
                                        args.pings, config, args.probes)
                figures["grow_seconds"] = round(took, 1)
                results.append(figures)
                if stopped_at is not None:
                    break
        finally:
            destroyed_in = await destroy_all(agent, kernels)
        await asyncio.sleep(10.0)
        heap_snapshot(agent)
        after = {"rss_mib": round(agent.rss_bytes() / 2**20, 1),
                 "fds": agent.process.num_fds(), "destroy_all_seconds": round(destroyed_in, 1)}
    return {"image": image, "cpu": args.cpu, "mem": args.mem, "cores": cores,
            "cpu_overcommit_ratio": ratio, "target": args.target,
            "stopped_at": stopped_at, "levels": results, "after_destroy_all": after,
            "targets": {"ping_ms": 100, "rss_mib_at_500": 110}}


def rows(r: dict[str, Any]) -> list[tuple[str, str, str, str]]:
    out = []
    for f in r["levels"]:
        rss = (f"{f['rss_mib_before_scrape']} MiB ({f['rss_mib']} after /metrics)"
               if "rss_mib_before_scrape" in f else f"{f['rss_mib']} MiB")
        out.append((f"{f['kernels']} idle kernels: agent RSS / idle CPU",
                    f"{rss} / {f['idle_cpu_percent_of_core']} %", "target ≤ 110 MiB at 500",
                    "-"))
        out.append((f"{f['kernels']} idle kernels: ping median / p95",
                    f"{f['ping']['median_ms']} / {f['ping']['p95_ms']} ms", "target < 100 ms",
                    "-"))
        out.append((f"{f['kernels']} idle kernels: stats cycle, create / destroy one more",
                    (f"{f['stats_cycle_ms']} ms, "
                    f"{f['create_destroy_one_more']['create_median_ms']} / "
                    f"{f['create_destroy_one_more']['destroy_median_ms']} ms"), "-", "-"))
    a = r["after_destroy_all"]
    out.append(("after destroying all", f"{a['rss_mib']} MiB, {a['fds']} fds", "-", "-"))
    return out


if __name__ == "__main__":
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--target", type=int, default=500)
    p.add_argument("--image", choices=sorted(IMAGES), default="python")
    p.add_argument("--cpu", default="1", help="each kernel's cpu (its CFS limit)")
    p.add_argument("--mem", default="40m", help="each kernel's memory limit")
    p.add_argument("--idle-seconds", type=float, default=20.0)
    p.add_argument("--pings", type=int, default=200)
    p.add_argument("--probes", type=int, default=3, help="create → destroy probes per level")
    p.add_argument("--min-free-gib", type=float, default=3.0)
    p.add_argument("--out", type=Path, default=None)
    p.add_argument("--heap", type=Path, default=None,
                   help="run the agent under tracemalloc; heap snapshots at each level go here")
    args = p.parse_args()
    HEAP_DIR = args.heap
    bc.run_and_emit("scale", main(args), rows, args.out)
