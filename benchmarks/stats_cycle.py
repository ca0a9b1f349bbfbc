"""One stats cycle over N running containers: berth.stats (CgroupReader + StatsCollector) vs
the Docker stats API, for the same containers, in the same run, alternating.

Berth: `StatsCollector.collect(targets)` over a `CgroupReader` (cgroupfs + /proc net/dev: the
cycle's reads batched in one worker thread, on descriptors held open, then the metrics
derived), warm (one cycle first, as in a running agent). Docker: every container's
`GET /containers/{id}/stats?stream=0&one-shot=1`, all concurrently, through aiodocker (one
session, as an agent holds), each document converted by `sample_from_docker_stats`. Also the
classic `stream=0` request without one-shot (what Backend.AI sends; Docker then waits for a
second sample) unless `--no-classic`. The containers are busybox `sleep`s labelled
`berth.test=1`, removed at the end. Issue 14's target: Berth's cycle ≤ 1/50 of one-shot's.

    .venv/bin/python benchmarks/stats_cycle.py --runs 10 --containers 200
"""

from __future__ import annotations

import asyncio
import json
import os
import time
from collections.abc import Awaitable, Callable
from typing import Any

import aiodocker
import bench_common as bc
import psutil

from berth.stats import (
    CgroupReader,
    HostCapacity,
    KernelTarget,
    StatsCollector,
    sample_from_docker_stats,
)
from berth.types import ContainerId, KernelId


async def start_containers(n: int) -> list[KernelTarget]:
    gate = asyncio.Semaphore(8)  # 200 `docker run`s at once would stall a 2-core machine

    async def one() -> str:
        async with gate:
            return await bc.docker_run(bc.BUSYBOX_IMAGE, "sleep", "3600")

    cids = await asyncio.gather(*(one() for _ in range(n)))
    info = json.loads(await bc.docker("inspect", *cids))
    return [KernelTarget(kernel_id=KernelId(f"k{i}"), container_id=ContainerId(c["Id"]),
                         pid=int(c["State"]["Pid"])) for i, c in enumerate(info)]


async def berth_cycle(collector: StatsCollector, targets: list[KernelTarget],
                      cpu: list[float]) -> float:
    """Wall time of one cycle; the process's CPU time for it is appended to `cpu`."""
    c0, t0 = time.process_time(), time.perf_counter()
    got = await collector.collect(targets)
    elapsed = time.perf_counter() - t0
    cpu.append(time.process_time() - c0)
    if len(got) != len(targets):
        raise RuntimeError(f"berth read {len(got)} of {len(targets)} containers")
    return elapsed


def docker_cycle(docker: aiodocker.Docker, targets: list[KernelTarget],
                 one_shot: bool) -> Callable[[], Awaitable[float]]:
    params = {"stream": "0", **({"one-shot": "1"} if one_shot else {})}

    async def one(t: KernelTarget) -> None:
        doc = await docker._query_json(f"containers/{t.container_id}/stats", params=params)
        sample = sample_from_docker_stats(doc, taken_at=time.monotonic())
        if sample.memory.usage <= 0:
            raise RuntimeError(f"Docker reported no memory usage for {t.container_id[:12]}")

    async def cycle() -> float:
        t0 = time.perf_counter()
        await asyncio.gather(*(one(t) for t in targets))
        return time.perf_counter() - t0

    return cycle


def direct_reads(reader: CgroupReader, targets: list[KernelTarget], rounds: int) -> float:
    """Median time of one CgroupReader.read, sequential, in this thread (no collector)."""
    times = []
    for _ in range(rounds):
        for t in targets:
            t0 = time.perf_counter()
            reader.read(t)
            times.append(time.perf_counter() - t0)
    times.sort()
    return times[len(times) // 2]


async def main(runs: int, n: int, classic: bool) -> dict[str, Any]:
    bc.require_images(bc.BUSYBOX_IMAGE)
    targets = await start_containers(n)
    reader = CgroupReader()
    host = HostCapacity(cpu_count=os.cpu_count() or 1, mem_total=psutil.virtual_memory().total)
    collector = StatsCollector(reader.read, host, scratch_reader=None)
    docker = aiodocker.Docker()
    cpu: list[float] = []
    sides: dict[str, Callable[[], Awaitable[float]]] = {
        "berth": lambda: berth_cycle(collector, targets, cpu),
        "docker_one_shot": docker_cycle(docker, targets, one_shot=True),
    }
    if classic:
        sides["docker_stream0"] = docker_cycle(docker, targets, one_shot=False)
    try:
        for side in sides.values():  # warm-up, not counted
            await side()
        cpu.clear()
        samples: dict[str, list[float]] = {k: [] for k in sides}
        order = list(sides)
        for i in range(runs):
            for key in order if i % 2 == 0 else reversed(order):
                samples[key].append(await sides[key]())
        per_read = direct_reads(reader, targets, rounds=max(runs, 5))
    finally:
        collector.close()
        await docker.close()
        await bc.docker("rm", "-f", *[t.container_id for t in targets])
    cycle = {k: with_p95(v) for k, v in samples.items()}
    return {"runs": runs, "containers": n, "load_average": os.getloadavg(),
            "cycle": cycle,
            "berth_cycle_cpu": with_p95(cpu),
            "ratio_one_shot": bc.ratio(cycle["berth"], cycle["docker_one_shot"]),
            "target_ratio": 1 / 50,
            "cgroup_read_per_container_ms": round(per_read * 1000, 3),
            "raw": samples}


def with_p95(samples: list[float]) -> dict[str, float]:
    ordered = sorted(samples)
    p95 = ordered[min(len(ordered) - 1, round(0.95 * (len(ordered) - 1)))]
    return {**bc.summary(samples), "p95_ms": round(p95 * 1000, 2)}


def rows(r: dict[str, Any]) -> list[tuple[str, str, str, str]]:
    c, n = r["cycle"], r["containers"]
    out = [(f"stats cycle, {n} containers (Docker API stream=0 one-shot=1)",
            bc.fmt(c["berth"]), bc.fmt(c["docker_one_shot"]),
            f"{bc.ratio(c['berth'], c['docker_one_shot']):.3f}×")]
    if "docker_stream0" in c:
        out.append((f"stats cycle, {n} containers (Docker API stream=0, classic)",
                    bc.fmt(c["berth"]), bc.fmt(c["docker_stream0"]),
                    f"{bc.ratio(c['berth'], c['docker_stream0']):.4f}×"))
    out.append(("Berth cycle, CPU time of the process", bc.fmt(r["berth_cycle_cpu"]), "-", "-"))
    out.append(("one CgroupReader.read, direct (no collector)",
                f"{r['cgroup_read_per_container_ms']} ms", "-", "-"))
    return out


if __name__ == "__main__":
    p = bc.parser(__doc__.splitlines()[0], default_runs=10)
    p.add_argument("--containers", type=int, default=200)
    p.add_argument("--no-classic", action="store_true",
                   help="skip the slow stream=0 request without one-shot")
    args = p.parse_args()
    bc.run_and_emit("stats_cycle", main(args.runs, args.containers, not args.no_classic), rows, args.out)
