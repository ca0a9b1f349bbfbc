"""The kernel state machine: which transitions are legal and how termination causes are read.

Pure: no clock, no I/O. The lifecycle asks it before every transition.
"""

from __future__ import annotations

from berth.errors import KernelStateError
from berth.types import KernelId, KernelState, TerminationReason

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


def check_transition(kernel_id: KernelId, current: KernelState, target: KernelState) -> None:
    if target not in TRANSITIONS[current]:
        raise KernelStateError(
            f"kernel {kernel_id}: cannot go from {current} to {target}",
            kernel_id=kernel_id, current=str(current), target=str(target),
        )


def classify_exit(exit_code: int | None, oom_killed: bool,
                  new_oom_kills: int | None = None) -> TerminationReason:
    """Why a container that ended on its own ended.

    137 is SIGKILL. It is an OOM kill of the kernel's main process only when the memory
    cgroup's oom_kill counter rose by an OOM the agent had not already seen the kernel survive
    (``new_oom_kills > 0``, counted by :class:`berth.kernel.oom.OomWatch`); a plain
    ``docker kill`` after an OOM that only killed a child (the code worker, say) is
    ``self-terminated``. Docker's OOM flag decides only when that count is unknown
    (``None``): the flag stays set for the container's whole life after any OOM in it.
    135 is SIGBUS, which a process receives when it touches a page of a full ``/dev/shm``
    (shm shares the memory cgroup but fails differently).
    """
    if exit_code == 137:
        ended_by_oom = oom_killed if new_oom_kills is None else new_oom_kills > 0
        if ended_by_oom:
            return TerminationReason.OOM_KILLED
    if exit_code == 135:
        return TerminationReason.SHM_EXHAUSTED
    return TerminationReason.SELF_TERMINATED
