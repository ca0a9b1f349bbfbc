"""The streamed snapshot families are the text prometheus_client writes for the same family."""

from __future__ import annotations

from decimal import Decimal

from hypothesis import given
from hypothesis import strategies as st
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import GaugeMetricFamily

from berth.stats import KernelStats, Metric, SampleSource, StatsSnapshot
from berth.telemetry.metrics import BerthMetrics
from berth.telemetry.snapshot_text import CONTAINER_LABELS, gauge_family, snapshot_text
from berth.types import ContainerId, KernelId


class _Family:
    def __init__(self, family: GaugeMetricFamily) -> None:
        self.family = family

    def collect(self) -> list[GaugeMetricFamily]:
        return [self.family]


def reference(name: str, doc: str, labels: tuple[str, ...],
              rows: list[tuple[tuple[str, ...], float]]) -> str:
    family = GaugeMetricFamily(name, doc, labels=labels)
    for values, value in rows:
        family.add_metric(list(values), value)
    registry = CollectorRegistry(auto_describe=False)
    registry.register(_Family(family))  # type: ignore[arg-type]
    return generate_latest(registry).decode()


label_text = st.text(st.characters(codec="utf-8"), max_size=12)  # quotes, \, \n, any script
value = st.floats(allow_nan=False) | st.sampled_from([float("inf"), -float("inf"), 1e21, -0.0])


@given(doc=st.text(max_size=30),
       rows=st.lists(st.tuples(st.tuples(label_text, label_text, label_text), value),
                     max_size=30),
       chunk=st.integers(1, 400))
def test_any_family_reads_as_prometheus_client_writes_it(
        doc: str, rows: list[tuple[tuple[str, ...], float]], chunk: int) -> None:
    labels = ("z_last", "a_first", "m_middle")  # written sorted by name, as the library does
    pieces = list(gauge_family("berth_x", doc, labels, rows, chunk))
    assert "".join(pieces) == reference("berth_x", doc, labels, rows)
    assert all(len(p) < chunk + 2000 for p in pieces)  # a piece ends at the line past chunk


def _kernel(n: int) -> KernelStats:
    metrics = {"cpu_util": Metric("cpu_util", Decimal(n), Decimal(100), "percent"),
               "mem": Metric("mem", Decimal(n * 1000), Decimal(4096000), "bytes"),
               "io_read": Metric("io_read", Decimal(5), None, "bytes")}
    return KernelStats(KernelId(f"k{n}"), ContainerId(f"c{n}"), 's"ess', "u\\ser", "pro\nj",
                       metrics, SampleSource.CGROUP)


def test_a_large_snapshot_leaves_in_many_pieces_and_reads_the_same() -> None:
    kernels = {KernelId(f"k{n}"): _kernel(n) for n in range(400)}
    snapshot = StatsSnapshot(kernels=kernels)
    pieces = list(snapshot_text("agent-1", snapshot))
    assert len(pieces) > 5
    rows = [((name, "agent-1", k.kernel_id, k.session_id, k.user_id, k.project_id, vt), v)
            for k in kernels.values()
            for name in ("cpu_util", "mem", "io_read")
            for vt, v in (("current", float(k.metrics[name].current)),
                          *((("capacity", float(k.metrics[name].capacity)),
                             ("pct", float(k.metrics[name].pct or 0)))
                            if k.metrics[name].capacity is not None else ()))]
    text = "".join(pieces)
    expected = reference("backendai_container_utilization", "Per-kernel container utilization",
                         CONTAINER_LABELS, rows)
    assert text.startswith(expected)

    metrics = BerthMetrics("agent-1", lambda: snapshot)
    assert metrics.exposition().decode().startswith(expected)
    assert b"backendai_rpc_request" in metrics.exposition()
