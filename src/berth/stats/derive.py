"""Turn successive raw samples of one kernel into metrics (pure; the history is the state).

Metric keys and meanings follow Backend.AI's intrinsic container metrics:
cpu_used (msec, accumulated), cpu_util (percent of one core, capacity = cores × 100),
cpu_user / cpu_system (msec), mem (bytes, usage − inactive_file, capacity = limit),
mem_rss / mem_cache / mem_swap (bytes), io_read / io_write (bytes, accumulated; stats.rate),
net_rx / net_tx (current = bytes per second), pids (capacity = pids.max),
io_scratch_size (bytes, capacity = quota).
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from decimal import Decimal

from berth.stats.models import (
    ContainerSample,
    KernelStats,
    KernelTarget,
    Metric,
    StatsSummary,
)
from berth.stats.moving import MovingStatistics

_MSEC_PER_NS = Decimal(1_000_000)
_GAUGE_STATS = frozenset({"min", "max", "avg"})
_COUNTER_STATS = frozenset({"diff", "rate"})


@dataclass(frozen=True)
class HostCapacity:
    cpu_count: int
    mem_total: int


class KernelHistory:
    """Moving statistics of every metric of one kernel, keyed by metric (and ':rate')."""

    __slots__ = ("_stats",)

    def __init__(self) -> None:
        self._stats: dict[str, MovingStatistics] = {}

    def feed(self, key: str, value: Decimal, at: float) -> StatsSummary:
        stats = self._stats.get(key)
        if stats is None:
            stats = self._stats[key] = MovingStatistics()
        return stats.feed(value, at)


_new_metric = tuple.__new__  # Metric without its keyword-handling constructor (hot path)
_SHARED: dict[int, Decimal] = {}  # small counts (pids, zero counters) and limits, shared
_SHARED_MAX = 4096


def to_decimal(value: int | Decimal) -> Decimal:
    """`value` as a Decimal; small values and the few distinct limits are shared objects, as
    the latest metrics of every kernel stay in memory (an idle kernel's figures are mostly
    zeros and small counts: one Decimal each, not one per kernel per metric)."""
    if isinstance(value, Decimal):
        return value
    shared = _SHARED.get(value)
    if shared is None:
        shared = Decimal(value)
        if len(_SHARED) < _SHARED_MAX and (value < 1024 or value & 0xFFFFF == 0):
            _SHARED[value] = shared  # < 1024, or a whole number of MiB (limits, quotas)
    return shared


def _gauge(h: KernelHistory, key: str, value: int | Decimal, at: float, unit: str,
           capacity: int | Decimal | None = None) -> Metric:
    current = to_decimal(value)
    return _new_metric(Metric, (key, current,
                                to_decimal(capacity) if capacity is not None else None,
                                unit, h.feed(key, current, at), _GAUGE_STATS))


def _counter(h: KernelHistory, key: str, value: int | Decimal, at: float, unit: str) -> Metric:
    current = to_decimal(value)
    return _new_metric(Metric, (key, current, None, unit, h.feed(key, current, at),
                                _COUNTER_STATS))


def _rate_of(h: KernelHistory, key: str, counter_key: str, value: int, at: float,
             unit: str) -> Metric:
    """Current = per-second rate of a byte counter (fed as `counter_key`); stats over rates."""
    rate = h.feed(counter_key, to_decimal(value), at).rate
    return _gauge(h, key, rate, at, unit)


def cpu_capacity_cores(sample: ContainerSample, host: HostCapacity) -> Decimal:
    cpu = sample.cpu
    if cpu.quota_us and cpu.period_us:
        return _cores(cpu.quota_us, cpu.period_us)
    return to_decimal(host.cpu_count)


@functools.lru_cache(maxsize=256)
def _percent(cores: Decimal) -> Decimal:
    return cores * 100


@functools.lru_cache(maxsize=256)
def _cores(quota_us: int, period_us: int) -> Decimal:
    """Cores of a CFS quota (a few distinct shapes on a node: computed once, shared)."""
    return Decimal(quota_us) / Decimal(period_us)


def _cpu(h: KernelHistory, s: ContainerSample, host: HostCapacity) -> list[Metric]:
    at = s.taken_at
    used = _counter(h, "cpu_used", Decimal(s.cpu.usage_ns) / _MSEC_PER_NS, at, "msec")
    assert used.stats is not None
    rate = used.stats.rate
    util = _gauge(h, "cpu_util", rate / 10 if rate else rate, at, "percent",
                  _percent(cpu_capacity_cores(s, host)))
    out = [used, util]
    if s.cpu.user_ns is not None:
        out.append(_counter(h, "cpu_user", Decimal(s.cpu.user_ns) / _MSEC_PER_NS, at, "msec"))
    if s.cpu.system_ns is not None:
        out.append(_counter(h, "cpu_system", Decimal(s.cpu.system_ns) / _MSEC_PER_NS, at, "msec"))
    return out


def _memory(h: KernelHistory, s: ContainerSample, host: HostCapacity) -> list[Metric]:
    m, at = s.memory, s.taken_at
    out = [_gauge(h, "mem", m.working_set, at, "bytes", m.limit or host.mem_total)]
    for key, value in (("mem_rss", m.rss), ("mem_cache", m.cache), ("mem_swap", m.swap)):
        if value is not None:
            out.append(_gauge(h, key, value, at, "bytes"))
    return out


def _io_net(h: KernelHistory, s: ContainerSample) -> list[Metric]:
    at = s.taken_at
    return [
        _counter(h, "io_read", s.io.read_bytes, at, "bytes"),
        _counter(h, "io_write", s.io.write_bytes, at, "bytes"),
        _rate_of(h, "net_rx", "net_rx:counter", s.net.rx_bytes, at, "bps"),
        _rate_of(h, "net_tx", "net_tx:counter", s.net.tx_bytes, at, "bps"),
    ]


def derive(target: KernelTarget, sample: ContainerSample, history: KernelHistory,
           host: HostCapacity, scratch_used: int | None = None) -> KernelStats:
    metrics = [*_cpu(history, sample, host), *_memory(history, sample, host),
               *_io_net(history, sample)]
    if sample.pids is not None:
        metrics.append(_gauge(history, "pids", sample.pids.current, sample.taken_at, "count",
                              sample.pids.limit))
    if scratch_used is not None:
        metrics.append(_gauge(history, "io_scratch_size", scratch_used, sample.taken_at,
                              "bytes", target.scratch_quota))
    return KernelStats(
        kernel_id=target.kernel_id, container_id=target.container_id,
        session_id=target.session_id, user_id=target.user_id, project_id=target.project_id,
        metrics={m.key: m for m in metrics}, source=sample.source,
        oom_kill=sample.memory.oom_kill,
    )
