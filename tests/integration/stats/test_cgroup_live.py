"""Real containers on this host's cgroup v1: CPU burn, network bytes, block I/O, OOM kill."""

from __future__ import annotations

import asyncio
import os
from collections.abc import Callable
from pathlib import Path

from berth.stats import (
    CgroupReader,
    CgroupVersion,
    HostCapacity,
    KernelTarget,
    StatsCollector,
    blkio_host_config,
    block_device_of,
)
from berth.types import ContainerId, KernelId

from .conftest import Container


def _target(c: Container) -> KernelTarget:
    return KernelTarget(KernelId("k-" + c.id[:8]), ContainerId(c.id), c.pid)


def _throttle_opts(device: str) -> tuple[str, ...]:
    cfg = blkio_host_config({}, block_device_of(Path("/var/lib/docker")))
    rate = cfg["BlkioDeviceWriteBps"][0]["Rate"]
    return ("--device-write-bps", f"{device}:{rate}", "--device-read-bps", f"{device}:{rate}")


async def test_live_container_stats(run_container: Callable[..., Container],
                                    bridge_gateway: str) -> None:
    device = block_device_of(Path("/var/lib/docker")).path
    script = (f"yes > /dev/null & while true; do ping -c 1 -W 1 {bridge_gateway} >/dev/null; "
              "dd if=/dev/zero of=/tmp/f bs=1M count=4 oflag=direct 2>/dev/null; "
              "sleep 0.2; done")
    c = run_container(script, "--memory", "256m", "--memory-swap", "256m", "--cpus", "1",
                      *_throttle_opts(device))
    reader = CgroupReader()
    dirs = reader.locate(c.id, c.pid)
    assert dirs.version is CgroupVersion.V1
    assert dirs.dirs["cpuacct"] == Path("/sys/fs/cgroup/cpuacct/docker") / c.id
    collector = StatsCollector(reader.read, HostCapacity(os.cpu_count() or 1, 1 << 34))
    try:
        await collector.collect([_target(c)])
        await asyncio.sleep(2.0)
        stats = (await collector.collect([_target(c)]))[_target(c).kernel_id]
    finally:
        collector.close()
    m = stats.metrics
    assert m["cpu_util"].capacity == 100                      # --cpus 1
    assert 15 <= m["cpu_util"].current <= 110, m["cpu_util"]  # shared 2-core host: noisy
    assert m["cpu_used"].current > 500
    assert m["mem"].capacity == 256 << 20 and m["mem"].current > 0
    assert m["pids"].current >= 3
    sample = reader.read(_target(c))
    assert sample.net.rx_bytes > 0 and sample.net.tx_bytes > 0
    assert sample.io.write_bytes >= 4 << 20, sample.io   # counts thanks to the throttle rule
    assert reader.oom_kill_count(c.id, c.pid) == 0


async def test_oom_kill_is_counted(run_container: Callable[..., Container]) -> None:
    # A subshell grows past the limit and is OOM-killed; the container itself survives.
    script = "(a=$(head -c 100000000 /dev/zero | tr '\\0' x)); sleep 600"
    c = run_container(script, "--memory", "32m", "--memory-swap", "32m")
    reader = CgroupReader()
    for _ in range(100):
        if (reader.oom_kill_count(c.id, c.pid) or 0) >= 1:
            break
        await asyncio.sleep(0.1)
    assert (reader.oom_kill_count(c.id, c.pid) or 0) >= 1
    collector = StatsCollector(reader.read, HostCapacity(1, 1 << 30))
    try:
        await collector.collect([_target(c)])
    finally:
        collector.close()
    assert (collector.last_oom_kill_count(ContainerId(c.id)) or 0) >= 1
