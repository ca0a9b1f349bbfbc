"""Per-process stats of each kernel (Backend.AI's `process` stat scope), through psutil.

The processes are those in the container's cgroup (host PIDs, `docker exec`ed ones too); for
each: cpu_used (msec, user + system), cpu_util (percent of one core), mem (RSS bytes),
io_read / io_write (bytes the process read from / wrote to storage). Blocking: run `collect`
in a thread. A process that exits between the listing and the read is left out.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from decimal import Decimal

import psutil

from berth.stats.derive import KernelHistory
from berth.stats.models import KernelTarget, Metric, ProcessStats
from berth.types import KernelId

PidLister = Callable[[KernelTarget], list[int]]
_GAUGE = frozenset({"min", "max", "avg"})
_COUNTER = frozenset({"diff", "rate"})


class ProcessCollector:
    def __init__(self, list_pids: PidLister, *,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self._list_pids = list_pids
        self._clock = clock
        self._history: dict[tuple[str, int], KernelHistory] = {}

    def collect(self, targets: Sequence[KernelTarget]) -> dict[KernelId, ProcessStats]:
        out: dict[KernelId, ProcessStats] = {}
        seen: set[tuple[str, int]] = set()
        for target in targets:
            pids: dict[int, dict[str, Metric]] = {}
            for pid in self._list_pids(target):
                key = (target.container_id, pid)
                metrics = self._one(pid, self._history.setdefault(key, KernelHistory()))
                if metrics is not None:
                    pids[pid] = metrics
                    seen.add(key)
            out[target.kernel_id] = ProcessStats(
                target.kernel_id, target.container_id, target.session_id, target.user_id,
                target.project_id, pids)
        self._history = {k: v for k, v in self._history.items() if k in seen}
        return out

    def _one(self, pid: int, history: KernelHistory) -> dict[str, Metric] | None:
        try:
            proc = psutil.Process(pid)
            with proc.oneshot():
                times = proc.cpu_times()
                rss = proc.memory_info().rss
                io = proc.io_counters()
        except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess):
            return None
        at = self._clock()
        used_ms = Decimal(repr(times.user + times.system)) * 1000
        used = history.feed("cpu_used", used_ms, at)
        values: list[tuple[str, Decimal, str, frozenset[str]]] = [
            ("cpu_used", used_ms, "msec", _COUNTER),
            ("cpu_util", used.rate / 10, "percent", _GAUGE),
            ("mem", Decimal(rss), "bytes", _GAUGE),
            ("io_read", Decimal(io.read_bytes), "bytes", _COUNTER),
            ("io_write", Decimal(io.write_bytes), "bytes", _COUNTER),
        ]
        out: dict[str, Metric] = {}
        for key, value, unit, stats_filter in values:
            stats = used if key == "cpu_used" else history.feed(key, value, at)
            out[key] = Metric(key, value, None, unit, stats, stats_filter)
        return out
