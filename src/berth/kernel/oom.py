"""Which OOM kills a kernel survived, so that only an OOM kill at its end reads ``oom-killed``.

Pure bookkeeping over the memory cgroup's ``oom_kill`` counter (one per container, monotonic):

* ``baseline`` — the counter when the agent took the container on (start, restart, adoption);
* ``survived`` — the count up to which OOM kills are known to have hit some process other than
  the main one (Docker reported ``oom`` and the container was still running a moment later);
* ``reported`` — the count up to which a death of the code worker was told to the Manager;
* ``pending`` — Docker reported an ``oom`` that has not been judged yet.

At the container's end, the OOM kills not yet survived are those that can have ended it.
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["OOM_SETTLE_SECONDS", "OomWatch"]

# How long after Docker's ``oom`` event the container must still run for the OOM to count as
# survived (a main process killed by it is gone within milliseconds).
OOM_SETTLE_SECONDS = 1.0


@dataclass
class OomWatch:
    baseline: int | None = None
    survived: int = 0
    reported: int = 0
    pending: bool = False

    @classmethod
    def start(cls, count: int | None, survived: int = 0) -> OomWatch:
        """A watch from the counter now (``None``: unreadable) and what a ledger recorded."""
        known = max(count or 0, survived)
        return cls(baseline=count, survived=known, reported=known)

    def on_oom_event(self) -> bool:
        """Docker said ``oom``; True when this opens a new judgement (not already pending)."""
        opened = not self.pending
        self.pending = True
        return opened

    def survive(self, count: int | None) -> int:
        """The container still runs after the pending OOM: record it; the kills newly survived."""
        self.pending = False
        if count is None or count <= self.survived:
            return 0
        new, self.survived = count - self.survived, count
        return new

    def worker_oom(self, count: int | None) -> bool:
        """The code worker died of SIGKILL: was it the OOM killer? (each kill is told once)"""
        if count is None:
            return self.pending
        if count <= self.reported:
            return False
        self.reported = count
        return True

    def new_at_exit(self, final: int | None) -> int | None:
        """OOM kills that can have ended the container (its last counter reading ``final``);
        None when nothing is known, so Docker's flag has to decide."""
        if self.pending:
            return max(1, (final or 0) - self.survived)
        if final is not None:
            return max(0, final - self.survived)
        if self.survived > 0:
            return 0  # Docker's flag is set by the OOM the kernel survived: it proves nothing
        return None
