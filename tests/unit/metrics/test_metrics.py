"""Exact names, types, labels and buckets of every exposed metric."""

from __future__ import annotations

from decimal import Decimal

import pytest
from prometheus_client.parser import text_string_to_metric_families

from berth.stats import KernelStats, Metric, NodeStats, SampleSource, StatsSnapshot
from berth.telemetry.metrics import BerthMetrics
from berth.types import ContainerId, KernelId


def _families(m: BerthMetrics) -> dict[str, object]:
    return {f.name: f for f in text_string_to_metric_families(m.exposition().decode())}


def _samples(m: BerthMetrics, name: str) -> list[tuple[str, dict[str, str], float]]:
    text = m.exposition().decode()
    return [(s.name, s.labels, s.value) for f in text_string_to_metric_families(text)
            for s in f.samples if s.name == name]


def _kernel(kid: str) -> KernelStats:
    metrics = {
        "cpu_util": Metric("cpu_util", Decimal(50), Decimal(200), "percent"),
        "cpu_used": Metric("cpu_used", Decimal(1234), None, "msec"),
        "mem": Metric("mem", Decimal(256), Decimal(1024), "bytes"),
        "net_rx": Metric("net_rx", Decimal(10), None, "bps"),
        "net_tx": Metric("net_tx", Decimal(20), None, "bps"),
        "io_read": Metric("io_read", Decimal(5), None, "bytes"),  # beyond the seed's list: exported too
    }
    return KernelStats(KernelId(kid), ContainerId("c" + kid), "sess", "user", "proj", metrics,
                       SampleSource.CGROUP)


def _node() -> NodeStats:
    pct = Metric("cpu_util", Decimal(30), Decimal(100), "percent")
    return NodeStats(
        metrics={"cpu_util": pct},
        devices={"cpu_util": {"0": pct, "1": pct},
                 "mem": {"root": Metric("mem", Decimal(1), Decimal(4), "bytes")},
                 "cuda_util": {"gpu0": Metric("cuda_util", Decimal(40), Decimal(100), "percent"),
                               "gpu1": Metric("cuda_util", Decimal(60), Decimal(100), "percent")}},
        agent_cpu_pct=12.5, agent_mem_bytes=1000)


def test_rpc_metrics_names_labels_buckets() -> None:
    m = BerthMetrics("agent-1")
    m.observe_rpc("create_kernels", 0.05)
    m.observe_rpc("create_kernels", 3.0, KeyError("x"))
    assert _samples(m, "backendai_rpc_requests_total") == [
        ("backendai_rpc_requests_total", {"method": "create_kernels"}, 2.0)]
    assert _samples(m, "backendai_rpc_failure_requests_total") == [
        ("backendai_rpc_failure_requests_total",
         {"method": "create_kernels", "exception": "KeyError"}, 1.0)]
    buckets = [s[1]["le"] for s in _samples(m, "backendai_rpc_request_duration_seconds_bucket")]
    assert buckets == ["0.001", "0.01", "0.1", "0.5", "1.0", "2.0", "5.0", "10.0", "30.0",
                       "60.0", "+Inf"]
    families = _families(m)
    assert families["backendai_rpc_requests"].type == "counter"  # type: ignore[attr-defined]
    assert families["backendai_rpc_request_duration_seconds"].type == "histogram"  # type: ignore[attr-defined]


def test_container_series_follow_snapshot_and_disappear() -> None:
    snapshot = StatsSnapshot(kernels={KernelId("k1"): _kernel("k1"),
                                      KernelId("k2"): _kernel("k2")})
    m = BerthMetrics("agent-1", lambda: snapshot)
    series = _samples(m, "backendai_container_utilization")
    assert {s[1]["kernel_id"] for s in series} == {"k1", "k2"}
    assert {s[1]["container_metric_name"] for s in series} == {
        "cpu_util", "cpu_used", "mem", "net_rx", "net_tx", "io_read"}
    cpu = {s[1]["value_type"]: s[2] for s in series
           if s[1]["kernel_id"] == "k1" and s[1]["container_metric_name"] == "cpu_util"}
    assert cpu == {"current": 50.0, "capacity": 200.0, "pct": 25.0}
    assert set(series[0][1]) == {"container_metric_name", "agent_id", "kernel_id", "session_id",
                                 "user_id", "project_id", "value_type"}
    snapshot = StatsSnapshot(kernels={KernelId("k2"): _kernel("k2")})
    assert {s[1]["kernel_id"] for s in _samples(m, "backendai_container_utilization")} == {"k2"}


def test_device_series_and_agent_gauges() -> None:
    m = BerthMetrics("agent-1", lambda: StatsSnapshot(node=_node()))
    devices = _samples(m, "backendai_device_utilization")
    assert {(s[1]["device_metric_name"], s[1]["device_id"]) for s in devices} == {
        ("cpu_util", "0"), ("cpu_util", "1"), ("mem", "root"),
        ("cuda_util", "gpu0"), ("cuda_util", "gpu1")}
    assert set(devices[0][1]) == {"device_metric_name", "agent_id", "device_id", "value_type"}
    assert _samples(m, "backendai_agent_cpu_usage")[0][2] == 12.5
    assert _samples(m, "backendai_agent_mem_usage")[0][2] == 1000
    assert _samples(m, "backendai_agent_gpu_usage")[0][2] == 50.0


def test_no_gpu_no_gpu_gauge_and_empty_snapshot_is_fine() -> None:
    m = BerthMetrics("a")
    assert _samples(m, "backendai_agent_gpu_usage") == []
    assert _samples(m, "backendai_container_utilization") == []


def test_agent_gauges_lifecycle_and_stat_tasks() -> None:
    m = BerthMetrics("agent-1", clock=lambda: 1700000000.0)
    m.heartbeat()
    m.set_kernel_count(3)
    m.observe_start_phase("pull", 1.5)
    m.observe_lifecycle_sync()
    m.observe_lifecycle_sync(TimeoutError())
    with m.stat_task("container"):
        pass
    with pytest.raises(OSError), m.stat_task("node"):
        raise OSError("boom")
    a = {"agent_id": "agent-1"}
    assert _samples(m, "backendai_agent_heartbeat") == [("backendai_agent_heartbeat", a, 1.7e9)]
    assert _samples(m, "backendai_kernel_count")[0][2] == 3
    assert _samples(m, "backendai_kernel_start_phase_duration_seconds_count") == [
        ("backendai_kernel_start_phase_duration_seconds_count", {**a, "phase": "pull"}, 1.0)]
    p = "backendai_sync_container_lifecycle"
    assert _samples(m, f"{p}_trigger_count_total")[0][2] == 2
    assert _samples(m, f"{p}_success_count_total")[0][2] == 1
    failures = {s[1]["exception"]: s[2] for s in _samples(m, f"{p}_failure_count_total")}
    assert failures == {"": 0, "TimeoutError": 1}  # the zero series exists from the start
    trig = {s[1]["stat_scope"]: s[2] for s in _samples(m, "backendai_stat_task_trigger_count_total")}
    assert trig == {"container": 1, "node": 1}
    fail = {(s[1]["stat_scope"], s[1]["exception"]): s[2]
            for s in _samples(m, "backendai_stat_task_failure_count_total")}
    assert fail == {("node", ""): 0, ("container", ""): 0, ("process", ""): 0,
                    ("node", "OSError"): 1}
    with pytest.raises(ValueError):
        m.observe_stat_task("cluster", 1.0)


def test_registries_are_independent() -> None:
    a, b = BerthMetrics("a"), BerthMetrics("b")
    a.observe_rpc("ping", 0.1)
    assert _samples(b, "backendai_rpc_requests_total") == []
