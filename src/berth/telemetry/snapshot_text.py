"""The stats snapshot's gauge families as Prometheus text, written in chunks (pure).

At 500 kernels these families are ~18,000 series (~7 MB of text). Built as
``GaugeMetricFamily`` samples (a named tuple and a label dict each) and rendered at once, a
scrape held all of it twice and left the agent's RSS ~8 MiB higher; here each series becomes
one line as it is produced and lines leave in chunks of about ``CHUNK`` bytes, so a scrape
holds one chunk. The text is what ``prometheus_client.generate_latest`` writes for the same
family (text format 0.0.4: labels sorted by name, values escaped, Go float formatting).
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from decimal import Decimal

from prometheus_client.utils import floatToGoString

from berth.stats import Metric, StatsSnapshot

CHUNK = 64 * 1024

CONTAINER_METRICS = ("cpu_used", "cpu_util", "mem", "cuda_mem", "cuda_util", "net_rx", "net_tx")
DEVICE_METRICS = ("cpu_util", "mem", "cuda_mem", "cuda_util", "cuda_temp", "cuda_power")
PROCESS_METRICS = ("cpu_util", "cpu_used", "mem", "io_read", "io_write")
CONTAINER_LABELS = ("container_metric_name", "agent_id", "kernel_id", "session_id", "user_id",
                    "project_id", "value_type")
DEVICE_LABELS = ("device_metric_name", "agent_id", "device_id", "value_type")
PROCESS_LABELS = ("process_metric_name", "agent_id", "kernel_id", "session_id", "user_id",
                  "project_id", "container_id", "pid", "value_type")

Row = tuple[Sequence[str], float]  # label values in the family's label order, and the value


def escape_label_value(value: str) -> str:
    return value.replace("\\", r"\\").replace("\n", r"\n").replace('"', r"\"")


def go_float(value: float) -> str:
    """``value`` as Prometheus' Go server writes it (prometheus_client's own formatting)."""
    return str(floatToGoString(value))  # type: ignore[no-untyped-call]


def escape_help(text: str) -> str:
    return text.replace("\\", r"\\").replace("\n", r"\n")


def gauge_family(name: str, doc: str, labels: Sequence[str], rows: Iterable[Row],
                 chunk: int = CHUNK) -> Iterator[str]:
    """``# HELP``, ``# TYPE`` and one line per row, as text pieces of about ``chunk`` chars."""
    order = sorted(range(len(labels)), key=lambda i: labels[i])
    names = [labels[i] for i in order]
    parts = [f"# HELP {name} {escape_help(doc)}\n# TYPE {name} gauge\n"]
    size = len(parts[0])
    for values, value in rows:
        pairs = ",".join(f'{n}="{escape_label_value(values[i])}"'
                         for n, i in zip(names, order, strict=True))
        line = f"{name}{{{pairs}}} {go_float(value)}\n"
        parts.append(line)
        size += len(line)
        if size >= chunk:
            yield "".join(parts)
            parts, size = [], 0
    if parts:
        yield "".join(parts)


def _ordered(present: Iterable[str], first: tuple[str, ...]) -> list[str]:
    """The seed's names that are present, in its order, then every other key, sorted."""
    keys = set(present)
    return [k for k in first if k in keys] + sorted(keys - set(first))


def metric_values(metric: Metric) -> Iterator[tuple[str, float]]:
    yield "current", float(metric.current)
    if metric.capacity is not None:
        yield "capacity", float(metric.capacity)
    pct = metric.pct
    if pct is not None:
        yield "pct", float(pct)


def _container_rows(agent_id: str, snapshot: StatsSnapshot) -> Iterator[Row]:
    for kernel in snapshot.kernels.values():
        for name in _ordered(kernel.metrics, CONTAINER_METRICS):
            for value_type, value in metric_values(kernel.metrics[name]):
                yield ((name, agent_id, kernel.kernel_id, kernel.session_id, kernel.user_id,
                        kernel.project_id, value_type), value)


def _device_rows(agent_id: str, snapshot: StatsSnapshot) -> Iterator[Row]:
    devices = snapshot.node.devices if snapshot.node is not None else {}
    for name in _ordered(devices, DEVICE_METRICS):
        for device_id, metric in devices[name].items():
            for value_type, value in metric_values(metric):
                yield (name, agent_id, device_id, value_type), value


def _process_rows(agent_id: str, snapshot: StatsSnapshot) -> Iterator[Row]:
    for procs in snapshot.processes.values():
        for pid, metrics in procs.pids.items():
            for name in _ordered(metrics, PROCESS_METRICS):
                for value_type, value in metric_values(metrics[name]):
                    yield ((name, agent_id, procs.kernel_id, procs.session_id, procs.user_id,
                            procs.project_id, procs.container_id, str(pid), value_type), value)


def _agent_rows(agent_id: str, snapshot: StatsSnapshot) -> Iterator[tuple[str, str, Row]]:
    node = snapshot.node
    if node is None:
        return
    yield ("backendai_agent_cpu_usage", "CPU usage of the agent process (%)",
           ((agent_id,), float(node.agent_cpu_pct)))
    yield ("backendai_agent_mem_usage", "RSS of the agent process (bytes)",
           ((agent_id,), float(node.agent_mem_bytes)))
    gpus = node.devices.get("cuda_util", {})
    if gpus:
        mean = sum((m.current for m in gpus.values()), Decimal(0)) / len(gpus)
        yield ("backendai_agent_gpu_usage", "Mean utilization of the node's GPUs (%)",
               ((agent_id,), float(mean)))


def snapshot_text(agent_id: str, snapshot: StatsSnapshot, chunk: int = CHUNK) -> Iterator[str]:
    """Container, device, process and agent-usage families of ``snapshot``, in pieces."""
    yield from gauge_family("backendai_container_utilization", "Per-kernel container utilization",
                            CONTAINER_LABELS, _container_rows(agent_id, snapshot), chunk)
    yield from gauge_family("backendai_device_utilization", "Per-device utilization of the node",
                            DEVICE_LABELS, _device_rows(agent_id, snapshot), chunk)
    yield from gauge_family("backendai_process_utilization",
                            "Per-process utilization inside kernels", PROCESS_LABELS,
                            _process_rows(agent_id, snapshot), chunk)
    for name, doc, row in _agent_rows(agent_id, snapshot):
        yield from gauge_family(name, doc, ("agent_id",), (row,), chunk)
