"""Per-process stats of each kernel (Backend.AI's `process` stat scope), from /proc.

The processes are those in the container's cgroup (host PIDs, `docker exec`ed ones too); for
each: cpu_used (msec, user + system), cpu_util (percent of one core), mem (RSS bytes),
io_read / io_write (bytes the process read from / wrote to storage). Blocking: run `collect`
in a thread. A process that exits between the listing and the read is left out.

Each process costs two reads (`/proc/<pid>/stat`, `/proc/<pid>/io`), parsed here: psutil
made a `Process` (one read for its identity) and read four files for the same figures, every
process of every kernel every cycle, most of an idle dense node's stats CPU.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Sequence
from decimal import Decimal
from pathlib import Path
from typing import NamedTuple

from berth.stats.cgroupfs import read_path
from berth.stats.derive import KernelHistory, to_decimal
from berth.stats.models import KernelTarget, Metric, ProcessStats
from berth.types import KernelId

PidLister = Callable[[KernelTarget], list[int]]
_GAUGE = frozenset({"min", "max", "avg"})
_COUNTER = frozenset({"diff", "rate"})
_GONE = (FileNotFoundError, ProcessLookupError, PermissionError)


class ProcCounters(NamedTuple):
    cpu_ticks: int      # utime + stime, in clock ticks
    rss_bytes: int
    read_bytes: int
    write_bytes: int


def parse_proc_stat(text: str) -> tuple[int, int]:
    """(utime + stime ticks, rss pages) of `/proc/<pid>/stat`; the command name (field 2,
    in parentheses) may hold spaces and parentheses, so fields count from its last `)`."""
    fields = text[text.rindex(")") + 2:].split(" ", 23)
    # fields[0] is field 3 (state): utime is 14, stime 15, rss 24
    return int(fields[11]) + int(fields[12]), int(fields[21])


def parse_proc_io(text: str) -> tuple[int, int]:
    """(read_bytes, write_bytes) of `/proc/<pid>/io` (storage, not the rchar/wchar of reads)."""
    read = write = 0
    for line in text.splitlines():
        key, _, value = line.partition(": ")
        if key == "read_bytes":
            read = int(value)
        elif key == "write_bytes":
            write = int(value)
    return read, write


def _read(path: str) -> str:
    """A /proc file (through the counter reader's buffer: no file object per read)."""
    text = read_path(path)
    if text is None:
        raise ProcessLookupError(path)
    return text


class ProcReader:
    """`ProcCounters` of a host PID; None when the process is gone (or not ours to read)."""

    def __init__(self, proc_root: Path = Path("/proc")) -> None:
        self._root = str(proc_root)
        self._page = os.sysconf("SC_PAGE_SIZE")

    def __call__(self, pid: int) -> ProcCounters | None:
        base = f"{self._root}/{pid}/"
        try:
            ticks, rss = parse_proc_stat(_read(base + "stat"))
            read, write = parse_proc_io(_read(base + "io"))
        except _GONE:
            return None
        return ProcCounters(ticks, rss * self._page, read, write)


class ProcessCollector:
    def __init__(self, list_pids: PidLister, *,
                 clock: Callable[[], float] = time.monotonic,
                 read_proc: Callable[[int], ProcCounters | None] | None = None) -> None:
        self._list_pids = list_pids
        self._clock = clock
        self._read_proc = read_proc or ProcReader()
        self._msec_per_tick = Decimal(1000) / Decimal(os.sysconf("SC_CLK_TCK"))
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
        counters = self._read_proc(pid)
        if counters is None:
            return None
        at = self._clock()
        used_ms = counters.cpu_ticks * self._msec_per_tick
        used = history.feed("cpu_used", used_ms, at)
        values: list[tuple[str, Decimal, str, frozenset[str]]] = [
            ("cpu_used", used_ms, "msec", _COUNTER),
            ("cpu_util", used.rate / 10 if used.rate else used.rate, "percent", _GAUGE),
            ("mem", Decimal(counters.rss_bytes), "bytes", _GAUGE),
            ("io_read", to_decimal(counters.read_bytes), "bytes", _COUNTER),
            ("io_write", to_decimal(counters.write_bytes), "bytes", _COUNTER),
        ]
        out: dict[str, Metric] = {}
        for key, value, unit, stats_filter in values:
            stats = used if key == "cpu_used" else history.feed(key, value, at)
            out[key] = Metric(key, value, None, unit, stats, stats_filter)
        return out
