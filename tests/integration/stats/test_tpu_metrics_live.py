"""TPU utilization end to end without a TPU (issue 12 item 6): a stand-in for libtpu's runtime
metrics service (a real gRPC server, tests/support/libtpu.py) runs inside a container's
network namespace, holding two of three fake chip nodes open as libtpu holds /dev/accel*. The
tpu plugin finds the holder, asks its service from inside that netns and its figures reach
/metrics per chip and per kernel; the chip nobody holds reads idle."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Callable, Iterator
from decimal import Decimal
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

from berth.telemetry.metrics import BerthMetrics
from berth.plugins.tpu import TPUPlugin
from berth.resources.allocator import ResourceManager
from berth.stats import KernelStats, KernelTarget, NodeCollector, SampleSource, StatsSnapshot
from berth.telemetry.stats_loop import PluginMeasures
from berth.types import ContainerId, KernelId

from .conftest import Container

SUPPORT = Path(__file__).resolve().parents[2] / "support" / "libtpu.py"
PORT = 8431


@pytest.fixture
def chips(tmp_path: Path) -> Path:
    dev = tmp_path / "dev"
    dev.mkdir()
    for i in range(3):
        (dev / f"accel{i}").write_bytes(b"")
    return dev


@pytest.fixture
def libtpu_in(chips: Path) -> Iterator[Callable[[Container], None]]:
    started: list[subprocess.Popen[str]] = []

    def start(container: Container) -> None:
        proc = subprocess.Popen(
            ["nsenter", f"--net=/proc/{container.pid}/ns/net", sys.executable, str(SUPPORT),
             str(PORT), str(chips / "accel0"), str(chips / "accel1"), "--",
             "37.5,80.0", "1073741824,3221225472", "17179869184,17179869184"],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
            env={"PYTHONPATH": str(SUPPORT.parents[1]), "PATH": "/usr/bin:/bin"})
        started.append(proc)
        assert proc.stdout is not None
        line = proc.stdout.readline()
        if line.strip() != "serving":
            proc.kill()
            pytest.fail(f"stand-in libtpu did not start: {proc.communicate()[1]}")

    yield start
    for proc in started:
        proc.kill()
        proc.communicate()  # reaps it and closes its pipes


def _series(m: BerthMetrics, name: str, label: str) -> dict[tuple[str, str, str], float]:
    text = m.exposition().decode()
    return {(s.labels[label], s.labels.get("device_id") or s.labels["kernel_id"],
             s.labels["value_type"]): s.value
            for f in text_string_to_metric_families(text) for s in f.samples if s.name == name}


async def test_tpu_duty_cycle_and_hbm_reach_prometheus(
        run_container: Callable[..., Container], chips: Path,
        libtpu_in: Callable[[Container], None], tmp_path: Path) -> None:
    container = run_container("sleep 300")
    libtpu_in(container)
    tpu = TPUPlugin({"dev_root": str(chips), "sys_root": str(tmp_path / "sys")})
    await tpu.init()
    assert [d.device_id for d in tpu.list_devices()] == ["accel0", "accel1", "accel2"]

    node = {m.key: dict(m.values) for m in await tpu.gather_node_measures()}
    assert node["tpu_util"] == {"accel0": Decimal("37.5"), "accel1": Decimal("80.0"),
                                "accel2": Decimal(0)}
    assert node["tpu_mem"]["accel1"] == Decimal(3 << 30)

    resources = ResourceManager([tpu])
    resources.allocate(KernelId("k"), {"tpu.device": "2"})
    measures = PluginMeasures()
    measures.resources = resources
    await measures.refresh()
    target = KernelTarget(KernelId("k"), ContainerId(container.id), container.pid)
    kernel = KernelStats(KernelId("k"), ContainerId(container.id), "s", "u", "p",
                         measures.kernel_metrics(target), SampleSource.CGROUP)
    snapshot = StatsSnapshot(kernels={KernelId("k"): kernel},
                             node=NodeCollector(device_sources=[measures.device_metrics]).collect())
    m = BerthMetrics("agent-1", lambda: snapshot)
    devices = _series(m, "backendai_device_utilization", "device_metric_name")
    assert devices[("tpu_util", "accel1", "current")] == 80.0
    assert devices[("tpu_util", "accel2", "current")] == 0.0
    assert devices[("tpu_mem", "accel0", "pct")] == 6.25  # 1 GiB of 16
    kernels = _series(m, "backendai_container_utilization", "container_metric_name")
    allocated = resources.allocations()[KernelId("k")].devices["tpu"]
    chips_of_k = sorted(d for slot in allocated.values() for d in slot)
    expected = {"accel0": 37.5, "accel1": 80.0, "accel2": 0.0}
    assert kernels[("tpu_util", "k", "current")] == pytest.approx(
        sum(expected[c] for c in chips_of_k) / 2)
