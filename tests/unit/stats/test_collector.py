"""The collector: rates from successive samples, isolation of failing/stuck reads, fallback."""

from __future__ import annotations

import threading
import time
from decimal import Decimal
from pathlib import Path

import pytest

from berth.stats import (
    ContainerSample,
    HostCapacity,
    KernelTarget,
    Metric,
    SampleSource,
    StatsCollector,
)
from berth.stats.models import CpuCounters, MemoryCounters, NetCounters, PidsCounters
from berth.types import ContainerId, KernelId

HOST = HostCapacity(cpu_count=4, mem_total=8 << 30)


def _target(n: int, **kw: object) -> KernelTarget:
    return KernelTarget(KernelId(f"k{n}"), ContainerId(f"c{n}"), 100 + n, **kw)  # type: ignore[arg-type]


def _sample(at: float, cpu_ns: int, rx: int = 0, source: SampleSource = SampleSource.CGROUP,
            oom: int | None = 0) -> ContainerSample:
    return ContainerSample(
        taken_at=at, cpu=CpuCounters(cpu_ns, quota_us=200000, period_us=100000),
        memory=MemoryCounters(usage=300, limit=1000, inactive_file=100, oom_kill=oom),
        net=NetCounters(rx_bytes=rx, tx_bytes=0), pids=PidsCounters(5, 64), source=source)


class Script:
    """A reader returning scripted samples per container."""

    def __init__(self, samples: dict[str, list[ContainerSample]]) -> None:
        self.samples = samples

    def __call__(self, target: KernelTarget) -> ContainerSample:
        return self.samples[target.container_id].pop(0)


async def test_rates_and_capacities() -> None:
    reader = Script({"c1": [_sample(10.0, 0, rx=0), _sample(12.0, 1_000_000_000, rx=4000)]})
    collector = StatsCollector(reader, HOST, scratch_reader=None)
    try:
        await collector.collect([_target(1)])
        stats = (await collector.collect([_target(1)]))[KernelId("k1")]
    finally:
        collector.close()
    m = stats.metrics
    assert m["cpu_used"].current == 1000                      # msec
    assert m["cpu_util"].current == 50                        # 500 msec/s = half a core
    assert m["cpu_util"].capacity == 200                      # quota 2 cores
    assert m["cpu_util"].pct == Decimal("25.00")
    assert m["mem"].current == 200 and m["mem"].capacity == 1000
    assert m["net_rx"].current == 2000                         # bytes per second
    assert m["pids"].capacity == 64
    wire = stats.to_wire()["cpu_util"]
    assert wire["current"] == "50" and wire["pct"] == "25.00" and wire["stats.version"] == 2
    assert all(isinstance(v, str) for k, v in wire.items() if k.startswith("stats.") and
               k != "stats.version")


async def test_counter_reset_gives_zero_rate_not_negative() -> None:
    reader = Script({"c1": [_sample(1.0, 5_000_000_000), _sample(2.0, 1_000_000)]})
    collector = StatsCollector(reader, HOST, scratch_reader=None)
    try:
        await collector.collect([_target(1)])
        stats = (await collector.collect([_target(1)]))[KernelId("k1")]
    finally:
        collector.close()
    assert stats.metrics["cpu_util"].current == 0


async def test_stuck_reader_does_not_stall_others_and_is_not_piled_up() -> None:
    release = threading.Event()
    calls: list[str] = []

    def reader(target: KernelTarget) -> ContainerSample:
        calls.append(target.container_id)
        if target.container_id == "c1":
            release.wait(10)
        return _sample(time.monotonic(), 1)

    collector = StatsCollector(reader, HOST, read_timeout=0.2, scratch_reader=None)
    try:
        started = time.monotonic()
        result = await collector.collect([_target(1), _target(2)])
        assert time.monotonic() - started < 1.5
        assert set(result) == {KernelId("k2")}
        assert collector.stuck_reads() == ["c1"]
        result = await collector.collect([_target(1), _target(2)])
        assert set(result) == {KernelId("k2")}
        assert calls.count("c1") == 1                          # not read again while stuck
    finally:
        release.set()
        collector.close()


async def test_docker_fallback_used_when_cgroup_read_fails() -> None:
    def reader(target: KernelTarget) -> ContainerSample:
        raise FileNotFoundError("cgroup gone")

    async def fallback(target: KernelTarget) -> ContainerSample:
        return _sample(1.0, 7, source=SampleSource.DOCKER)

    collector = StatsCollector(reader, HOST, docker_fallback=fallback, scratch_reader=None)
    try:
        stats = (await collector.collect([_target(1)]))[KernelId("k1")]
    finally:
        collector.close()
    assert stats.source is SampleSource.DOCKER


async def test_terminated_kernel_leaves_snapshot_and_oom_is_remembered() -> None:
    reader = Script({"c1": [_sample(1.0, 1, oom=3)], "c2": [_sample(1.0, 1), _sample(2.0, 2)]})
    collector = StatsCollector(reader, HOST, scratch_reader=None)
    try:
        await collector.collect([_target(1), _target(2)])
        assert set(collector.latest.kernels) == {"k1", "k2"}
        assert collector.last_oom_kill_count(ContainerId("c1")) == 3
        await collector.collect([_target(2)])
        assert set(collector.latest.kernels) == {"k2"}
        assert collector.last_oom_kill_count(ContainerId("c1")) is None
    finally:
        collector.close()


async def test_scratch_usage_against_quota(tmp_path: Path) -> None:
    (tmp_path / "f").write_bytes(b"x" * 100_000)
    reader = Script({"c1": [_sample(1.0, 1)]})
    collector = StatsCollector(reader, HOST)
    try:
        target = _target(1, scratch_path=tmp_path, scratch_quota=1 << 20)
        stats = (await collector.collect([target]))[KernelId("k1")]
    finally:
        collector.close()
    scratch = stats.metrics["io_scratch_size"]
    assert scratch.current >= 100_000 and scratch.capacity == 1 << 20


@pytest.mark.parametrize("bad", [ValueError("parse"), PermissionError("denied")])
async def test_failure_without_fallback_drops_only_that_kernel(bad: Exception) -> None:
    def reader(target: KernelTarget) -> ContainerSample:
        if target.container_id == "c1":
            raise bad
        return _sample(1.0, 1)

    collector = StatsCollector(reader, HOST, scratch_reader=None)
    try:
        assert set(await collector.collect([_target(1), _target(2)])) == {"k2"}
    finally:
        collector.close()


async def test_plugin_kernel_metrics_are_merged_and_failures_isolated() -> None:
    def gpu(target: KernelTarget) -> dict[str, Metric]:
        return {"cuda_util": Metric("cuda_util", Decimal(70), Decimal(100), "percent")}

    def broken(target: KernelTarget) -> dict[str, Metric]:
        raise RuntimeError("nvml")

    reader = Script({"c1": [_sample(1.0, 1)]})
    collector = StatsCollector(reader, HOST, scratch_reader=None, kernel_sources=[broken, gpu])
    try:
        stats = (await collector.collect([_target(1)]))[KernelId("k1")]
    finally:
        collector.close()
    assert stats.metrics["cuda_util"].current == 70 and "cpu_util" in stats.metrics


async def test_a_cycle_reads_every_container_in_one_thread() -> None:
    threads: set[int] = set()

    def reader(target: KernelTarget) -> ContainerSample:
        threads.add(threading.get_ident())
        return _sample(time.monotonic(), 1)

    collector = StatsCollector(reader, HOST, scratch_reader=None)
    try:
        got = await collector.collect([_target(n) for n in range(300)])
    finally:
        collector.close()
    assert len(got) == 300 and len(threads) == 1
    assert threading.get_ident() not in threads


async def test_every_worker_blocked_gives_timeouts_not_a_hang() -> None:
    release = threading.Event()

    def reader(target: KernelTarget) -> ContainerSample:
        release.wait(10)
        return _sample(time.monotonic(), 1)

    collector = StatsCollector(reader, HOST, read_timeout=0.1, scratch_reader=None,
                               max_workers=1)
    try:
        assert await collector.collect([_target(1), _target(2)]) == {}
        assert collector.stuck_reads() == ["c1"]   # c2 never started: no worker was free
    finally:
        release.set()
        collector.close()


def test_scratch_meter_walks_a_directory_again_only_when_old(tmp_path: Path) -> None:
    from berth.stats import ScratchMeter

    now = [100.0]
    meter = ScratchMeter(30.0, clock=lambda: now[0], jitter=lambda: 0.0)
    scratch = tmp_path / "k1"
    scratch.mkdir()
    (scratch / "a").write_bytes(b"x" * 100_000)
    first = meter(scratch)
    assert first >= 100_000
    (scratch / "b").write_bytes(b"x" * 100_000)
    now[0] += 29
    assert meter(scratch) == first                  # cached: walked 29 s ago
    now[0] += 2
    assert meter(scratch) >= first + 100_000        # 31 s: walked again
    now[0] += 100
    assert meter(tmp_path / "k2") == 0              # gone kernels' entries are swept
    assert list(meter._walked) == []
