"""Issue 12 (4, 6): what the stats tier reports — the scratch loop device in block-I/O rules
and counts, per-process stats, and every measured device/kernel metric on /metrics (ROCm from
the plugin over the checked-in rocm-smi output, node network per device)."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path
from typing import Any

from prometheus_client.parser import text_string_to_metric_families

from berth.plugins.rocm import ROCmPlugin
from berth.resources.allocator import ResourceManager
from berth.stats import (
    BlockDevice,
    KernelStats,
    KernelTarget,
    NodeCollector,
    ProcessCollector,
    SampleSource,
    StatsSnapshot,
    blkio_host_config,
    sample_from_docker_stats,
)
from berth.stats.cgroup import parse_blkio_v1, parse_io_stat_v2
from berth.telemetry.metrics import BerthMetrics
from berth.telemetry.stats_loop import PluginMeasures
from berth.types import ContainerId, KernelId

FIX = Path(__file__).resolve().parents[2] / "fixtures"
DISK, LOOP = BlockDevice("vda", 254, 0), BlockDevice("loop3", 7, 3)


def _samples(m: BerthMetrics, name: str) -> list[dict[str, str]]:
    text = m.exposition().decode()
    return [dict(s.labels, value=str(s.value)) for f in text_string_to_metric_families(text)
            for s in f.samples if s.name == name]


def test_rules_go_on_the_disk_and_the_scratch_loop_device() -> None:
    cfg = blkio_host_config({"io_write_bps": "4m"}, DISK, LOOP)
    assert cfg["BlkioDeviceWriteBps"] == [{"Path": "/dev/vda", "Rate": 4 << 20},
                                          {"Path": "/dev/loop3", "Rate": 4 << 20}]
    assert [r["Path"] for r in cfg["BlkioDeviceReadBps"]] == ["/dev/vda", "/dev/loop3"]
    assert blkio_host_config({"io_write_bps": "4m"}) == {}  # no device found: no rule


def test_loop_device_bytes_are_not_counted_twice() -> None:
    # Measured: 24 MiB written with fsync to a direct-I/O loop scratch shows on both 7:N and
    # the backing disk, in the kernel's own blkio cgroup.
    v1 = "7:0 Write 25165824\n254:0 Write 25237504\n7:0 Read 4096\n254:0 Read 8192\nTotal 1\n"
    assert (parse_blkio_v1(v1).read_bytes, parse_blkio_v1(v1).write_bytes) == (8192, 25237504)
    v2 = "7:0 rbytes=4096 wbytes=25165824\n254:0 rbytes=8192 wbytes=25237504\n"
    assert (parse_io_stat_v2(v2).read_bytes, parse_io_stat_v2(v2).write_bytes) == (8192, 25237504)
    doc: dict[str, Any] = {"cpu_stats": {"cpu_usage": {"total_usage": 1}},
                           "memory_stats": {"usage": 1},
                           "blkio_stats": {"io_service_bytes_recursive": [
                               {"major": 7, "minor": 0, "op": "Write", "value": 100},
                               {"major": 254, "minor": 0, "op": "Write", "value": 101}]}}
    assert sample_from_docker_stats(doc, taken_at=1.0).io.write_bytes == 101


def test_process_stats_of_a_real_process(tmp_path: Path) -> None:
    target = KernelTarget(KernelId("k"), ContainerId("c"), os.getpid(), session_id="s",
                          user_id="u", project_id="p")
    ticks = iter(range(100))
    collector = ProcessCollector(lambda t: [os.getpid(), 2**22 + 7],  # the second never exists
                                 clock=lambda: float(next(ticks)))
    collector.collect([target])
    (tmp_path / "blob").write_bytes(os.urandom(1 << 20))
    os.sync()
    hashlib.sha256(b"x" * (50 << 20)).digest()  # some CPU between the two reads
    stats = collector.collect([target])[KernelId("k")]
    assert list(stats.pids) == [os.getpid()]
    metrics = stats.pids[os.getpid()]
    assert set(metrics) == {"cpu_used", "cpu_util", "mem", "io_read", "io_write"}
    assert metrics["cpu_used"].current > 0 and metrics["cpu_util"].current > 0
    assert metrics["mem"].current > 1 << 20
    assert metrics["io_write"].current >= 1 << 20
    m = BerthMetrics("agent-1", lambda: StatsSnapshot(processes={KernelId("k"): stats}))
    series = _samples(m, "backendai_process_utilization")
    assert {s["process_metric_name"] for s in series} == set(metrics)
    one = series[0]
    assert (one["kernel_id"], one["container_id"], one["pid"], one["session_id"]) == (
        "k", "c", str(os.getpid()), "s")
    m.observe_stat_task("process", 0.01)
    assert _samples(m, "backendai_stat_task_success_count_total")[0]["stat_scope"] == "process"


async def test_rocm_measures_and_node_network_reach_prometheus() -> None:
    async def smi(argv: Any) -> str:
        return (FIX / "rocm/showallinfo-mi210x2.json").read_text()

    rocm = ROCmPlugin({"sys_root": FIX / "rocm/sys"}, runner=smi)
    await rocm.init()
    resources = ResourceManager([rocm])
    resources.allocate(KernelId("k"), {"rocm.device": "1"})
    measures = PluginMeasures()
    measures.resources = resources
    await measures.refresh()
    node = NodeCollector(device_sources=[measures.device_metrics]).collect()
    target = KernelTarget(KernelId("k"), ContainerId("c"), 0)
    kernel = KernelStats(KernelId("k"), ContainerId("c"), "s", "u", "p",
                         measures.kernel_metrics(target), SampleSource.CGROUP)
    m = BerthMetrics("agent-1", lambda: StatsSnapshot(kernels={KernelId("k"): kernel}, node=node))
    devices = _samples(m, "backendai_device_utilization")
    names = {s["device_metric_name"] for s in devices}
    assert {"rocm_util", "rocm_mem", "rocm_temp", "rocm_power", "net_rx", "net_tx"} <= names
    util = {s["device_id"]: s["value"] for s in devices
            if s["device_metric_name"] == "rocm_util" and s["value_type"] == "current"}
    assert util == {"card0": "17.0", "card1": "0.0"}
    assert {s["device_id"] for s in devices if s["device_metric_name"] == "net_rx"} == {"node"}
    containers = _samples(m, "backendai_container_utilization")
    assert {s["container_metric_name"] for s in containers} >= {"rocm_util", "rocm_mem"}

