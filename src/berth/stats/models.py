"""Records of the stats subsystem: raw counters read from the kernel, and derived metrics.

Raw counters (`ContainerSample`) are what one read of cgroupfs + the container's netns gives;
they are cumulative and carry no rates. `Metric` is a derived value with its moving
statistics, serialised to Backend.AI's `MetricValue` shape (every number a string).

The records built for every container in every stats cycle (counters, samples, summaries,
metrics) are named tuples: immutable like frozen dataclasses, at a third of their build cost.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from decimal import ROUND_HALF_UP, Decimal
from enum import StrEnum
from pathlib import Path
from typing import Any, NamedTuple

from berth.types import ContainerId, KernelId


class CgroupVersion(StrEnum):
    V1 = "v1"
    V2 = "v2"


class SampleSource(StrEnum):
    CGROUP = "cgroup"
    DOCKER = "docker"


class CpuCounters(NamedTuple):
    usage_ns: int
    user_ns: int | None = None
    system_ns: int | None = None
    quota_us: int | None = None      # None: no CFS quota
    period_us: int | None = None


class MemoryCounters(NamedTuple):
    usage: int
    limit: int | None = None         # None: unlimited
    rss: int | None = None
    cache: int | None = None
    swap: int | None = None
    inactive_file: int = 0
    oom_kill: int | None = None      # None: the kernel does not expose the counter

    @property
    def working_set(self) -> int:
        """Usage minus reclaimable inactive page cache (what Backend.AI reports as `mem`)."""
        return max(self.usage - self.inactive_file, 0)


class IoCounters(NamedTuple):
    read_bytes: int = 0
    write_bytes: int = 0


class NetCounters(NamedTuple):
    rx_bytes: int = 0
    tx_bytes: int = 0


class PidsCounters(NamedTuple):
    current: int
    limit: int | None = None


class ContainerSample(NamedTuple):
    """One read of a container's counters; `taken_at` is a monotonic timestamp in seconds."""

    taken_at: float
    cpu: CpuCounters
    memory: MemoryCounters
    io: IoCounters = IoCounters()
    net: NetCounters = NetCounters()
    pids: PidsCounters | None = None
    source: SampleSource = SampleSource.CGROUP


@dataclass(frozen=True)
class KernelTarget:
    """What the collector needs to know of one live kernel."""

    kernel_id: KernelId
    container_id: ContainerId
    pid: int
    scratch_path: Path | None = None
    scratch_quota: int | None = None   # bytes; None: no quota
    session_id: str = ""
    user_id: str = ""
    project_id: str = ""


class StatsSummary(NamedTuple):
    """Moving statistics of one metric (see `berth.stats.moving.MovingStatistics`)."""

    min: Decimal
    max: Decimal
    sum: Decimal
    count: int  # type: ignore[assignment]  # shadows tuple.count, as the field is named
    diff: Decimal
    rate: Decimal

    @property
    def avg(self) -> Decimal:
        return self.sum / self.count if self.count else Decimal(0)


_ALL_STATS = frozenset({"min", "max", "sum", "avg", "diff", "rate"})


def _s(value: Decimal) -> str:
    return format(value.quantize(Decimal("0.000001"), rounding=ROUND_HALF_UP).normalize(), "f")


class Metric(NamedTuple):
    """A derived metric value; `pct` is current/capacity in percent when capacity is known."""

    key: str
    current: Decimal
    capacity: Decimal | None
    unit_hint: str
    stats: StatsSummary | None = None
    stats_filter: frozenset[str] = _ALL_STATS

    @property
    def pct(self) -> Decimal | None:
        if not self.capacity:
            return None
        return (self.current / self.capacity * 100).quantize(Decimal("0.01"), ROUND_HALF_UP)

    def to_wire(self) -> dict[str, Any]:
        """Backend.AI `MetricValue`: `{current, capacity, pct, unit_hint, stats.*}`, all strings."""
        pct = self.pct
        wire: dict[str, Any] = {
            "current": _s(self.current),
            "capacity": _s(self.capacity) if self.capacity is not None else None,
            "pct": str(pct) if pct is not None else None,
            "unit_hint": self.unit_hint,
            "stats.version": 2,
        }
        if self.stats is not None:
            values = {"min": self.stats.min, "max": self.stats.max, "sum": self.stats.sum,
                      "avg": self.stats.avg, "diff": self.stats.diff, "rate": self.stats.rate}
            for name in sorted(self.stats_filter):
                wire[f"stats.{name}"] = _s(values[name])
        return wire


@dataclass(frozen=True)
class KernelStats:
    kernel_id: KernelId
    container_id: ContainerId
    session_id: str
    user_id: str
    project_id: str
    metrics: Mapping[str, Metric]
    source: SampleSource
    oom_kill: int | None = None

    def to_wire(self) -> dict[str, Any]:
        return {key: m.to_wire() for key, m in self.metrics.items()}


@dataclass(frozen=True)
class NodeStats:
    """Node metrics plus per-device metrics: `devices[metric_key][device_id]`."""

    metrics: Mapping[str, Metric]
    devices: Mapping[str, Mapping[str, Metric]] = field(default_factory=dict)
    agent_cpu_pct: float = 0.0          # the agent process itself
    agent_mem_bytes: int = 0

    def to_wire(self) -> dict[str, Any]:
        return {
            "node": {key: m.to_wire() for key, m in self.metrics.items()},
            "devices": {key: {dev: m.to_wire() for dev, m in per_dev.items()}
                        for key, per_dev in self.devices.items()},
        }


@dataclass(frozen=True)
class ProcessStats:
    """The processes of one kernel: `pids[pid][metric_key]`."""

    kernel_id: KernelId
    container_id: ContainerId
    session_id: str
    user_id: str
    project_id: str
    pids: Mapping[int, Mapping[str, Metric]]

    def to_wire(self) -> dict[str, dict[str, object]]:
        """Backend.AI's `{pid: {metric: MetricValue}}` (pids as strings)."""
        return {str(pid): {k: m.to_wire() for k, m in metrics.items()}
                for pid, metrics in self.pids.items()}



@dataclass(frozen=True)
class StatsSnapshot:
    """The latest stats of the node and of each live kernel (what metrics and get_status read)."""

    kernels: Mapping[KernelId, KernelStats] = field(default_factory=dict)
    node: NodeStats | None = None
    processes: Mapping[KernelId, ProcessStats] = field(default_factory=dict)


EMPTY_SNAPSHOT = StatsSnapshot()
