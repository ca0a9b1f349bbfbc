"""The kernel state machine: which transitions are legal and how termination causes are read.

Pure: no clock, no I/O. The lifecycle asks it before every transition.
"""

from __future__ import annotations

from berth.errors import KernelStateError
from berth.types import KernelState, TerminationReason

__all__ = ["TRANSITIONS", "check_transition", "classify_exit", "is_transitional"]

S = KernelState

TRANSITIONS: dict[KernelState, frozenset[KernelState]] = {
    S.PREPARING: frozenset({S.PULLING, S.CREATING, S.TERMINATING}),
    S.PULLING: frozenset({S.CREATING, S.TERMINATING}),
    S.CREATING: frozenset({S.RUNNING, S.TERMINATING}),
    S.RUNNING: frozenset({S.RESTARTING, S.TERMINATING}),
    S.RESTARTING: frozenset({S.RUNNING, S.TERMINATING}),
    S.TERMINATING: frozenset({S.TERMINATED}),
    S.TERMINATED: frozenset(),
}

_TRANSITIONAL = frozenset({S.PREPARING, S.PULLING, S.CREATING, S.RESTARTING, S.TERMINATING})


def is_transitional(state: KernelState) -> bool:
    return state in _TRANSITIONAL


def check_transition(kernel_id: str, current: KernelState, target: KernelState) -> None:
    if target not in TRANSITIONS[current]:
        raise KernelStateError(
            f"kernel {kernel_id}: cannot go from {current} to {target}",
            kernel_id=kernel_id, current=str(current), target=str(target),
        )


def classify_exit(exit_code: int | None, oom_killed: bool, oom_kills: int = 0) -> TerminationReason:
    """Why a container that ended on its own ended.

    137 is SIGKILL: it is an OOM kill when Docker's OOM flag or the memory cgroup's oom_kill
    counter says an OOM happened in the kernel, otherwise someone killed it. The flag alone is
    not enough: Docker sets it for any OOM in the container, also one that only killed a child
    while the kernel went on and later ended normally. 135 is SIGBUS, which a process receives when it
    touches a page of a full ``/dev/shm`` (shm shares the memory cgroup but fails differently).
    """
    if exit_code == 137 and (oom_killed or oom_kills > 0):
        return TerminationReason.OOM_KILLED
    if exit_code == 135:
        return TerminationReason.SHM_EXHAUSTED
    return TerminationReason.SELF_TERMINATED
