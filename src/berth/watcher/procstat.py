"""What the watcher reports about the agent process: its state, memory and CPU, from /proc.

Reads ``/proc/<pid>/stat`` and ``/proc/<pid>/status`` under an injectable root, so the parser
is tested on fixture text. The CPU share is computed between two readings of the same process.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

__all__ = ["ProcessSample", "ProcessSampler", "parse_stat", "parse_status_rss"]

STATES = {"R": "running", "S": "sleeping", "D": "disk-sleep", "Z": "zombie", "T": "stopped",
          "t": "tracing-stop", "X": "dead", "I": "idle"}


@dataclass(frozen=True)
class ProcessSample:
    pid: int
    state: str
    rss_bytes: int
    cpu_seconds: float
    threads: int
    taken_at: float


def parse_stat(text: str, clk_tck: int) -> tuple[str, float, int]:
    """(state, user+system CPU seconds, threads) from a ``/proc/<pid>/stat`` line."""
    fields = text[text.rindex(")") + 2:].split()  # comm may hold spaces and parentheses
    state = STATES.get(fields[0], fields[0])
    utime, stime, threads = int(fields[11]), int(fields[12]), int(fields[17])
    return state, (utime + stime) / clk_tck, threads


def parse_status_rss(text: str) -> int:
    """Resident set size in bytes from ``/proc/<pid>/status`` (``VmRSS:  1234 kB``)."""
    for line in text.splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    return 0


class ProcessSampler:
    def __init__(self, proc_root: Path = Path("/proc"), clk_tck: int | None = None,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self._root = proc_root
        self._clk_tck = clk_tck or os.sysconf("SC_CLK_TCK")
        self._clock = clock
        self._last: ProcessSample | None = None

    def sample(self, pid: int) -> ProcessSample | None:
        """The process now; None when it is gone."""
        try:
            stat = (self._root / str(pid) / "stat").read_text()
            status = (self._root / str(pid) / "status").read_text()
        except (FileNotFoundError, ProcessLookupError):
            return None
        state, cpu, threads = parse_stat(stat, self._clk_tck)
        return ProcessSample(pid, state, parse_status_rss(status), cpu, threads, self._clock())

    def report(self, pid: int | None) -> dict[str, object]:
        """``{pid, state, rss-bytes, cpu-seconds, cpu-percent, threads}`` (state ``absent``
        without a process); the CPU share is over the time since the previous report."""
        now = self.sample(pid) if pid else None
        if now is None:
            self._last = None
            return {"pid": pid, "state": "absent"}
        last, self._last = self._last, now
        percent = None
        if last is not None and last.pid == now.pid and now.taken_at > last.taken_at:
            percent = round(100 * (now.cpu_seconds - last.cpu_seconds)
                            / (now.taken_at - last.taken_at), 1)
        return {"pid": now.pid, "state": now.state, "rss-bytes": now.rss_bytes,
                "cpu-seconds": round(now.cpu_seconds, 2), "cpu-percent": percent,
                "threads": now.threads}
