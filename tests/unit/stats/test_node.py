from __future__ import annotations

from collections import namedtuple
from decimal import Decimal

from berth.stats import Metric, NodeCollector
from berth.stats.node import busy_msec

Times = namedtuple("Times", "user nice system idle iowait irq softirq steal")


def test_busy_excludes_idle_and_iowait() -> None:
    assert busy_msec(Times(1.0, 0.0, 0.5, 10.0, 2.0, 0.0, 0.0, 0.0)) == Decimal(1500)


def test_node_collect_has_per_core_devices_and_plugin_devices() -> None:
    gpu = {"cuda_util": {"0": Metric("cuda_util", Decimal(50), Decimal(100), "percent")}}
    ticks = iter([1.0, 2.0])
    collector = NodeCollector(device_sources=[lambda: gpu], clock=lambda: next(ticks))
    collector.collect()
    node = collector.collect()
    assert {"cpu_util", "mem", "disk", "net_rx", "net_tx"} <= set(node.metrics)
    assert node.metrics["cpu_util"].capacity == 100 * len(node.devices["cpu_util"])
    assert 0 <= node.metrics["cpu_util"].current <= node.metrics["cpu_util"].capacity  # type: ignore[operator]
    assert node.devices["cuda_util"]["0"].current == 50
    assert node.metrics["mem"].capacity is not None and node.agent_mem_bytes > 0
    assert "node" in node.to_wire() and "devices" in node.to_wire()
