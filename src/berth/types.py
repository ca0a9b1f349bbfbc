"""Ids and closed sets shared by every subsystem."""

from __future__ import annotations

from enum import StrEnum
from typing import NewType

KernelId = NewType("KernelId", str)
SessionId = NewType("SessionId", str)
AgentId = NewType("AgentId", str)
ContainerId = NewType("ContainerId", str)
SlotName = NewType("SlotName", str)
DeviceId = NewType("DeviceId", str)

OWNER_LABEL = "ai.backend.owner"
KERNEL_ID_LABEL = "ai.backend.kernel-id"
SESSION_ID_LABEL = "ai.backend.session-id"
AGENT_ID_LABEL = "ai.backend.agent-id"


class KernelState(StrEnum):
    PREPARING = "PREPARING"
    PULLING = "PULLING"
    CREATING = "CREATING"
    RUNNING = "RUNNING"
    RESTARTING = "RESTARTING"
    TERMINATING = "TERMINATING"
    TERMINATED = "TERMINATED"


class TerminationReason(StrEnum):
    """Closed set of why a kernel ended; values follow Backend.AI's KernelLifecycleEventReason."""

    USER_REQUESTED = "user-requested"
    SELF_TERMINATED = "self-terminated"
    OOM_KILLED = "oom-killed"
    SHM_EXHAUSTED = "shm-exhausted"
    FAILED_TO_CREATE = "failed-to-create"
    FAILED_TO_START = "failed-to-start"
    BOOTSTRAP_TIMEOUT = "bootstrap-timeout"
    EXEC_TIMEOUT = "exec-timeout"
    DEADLINE = "deadline"
    AGENT_RESET = "agent-reset"
    AGENT_TERMINATION = "agent-termination"
    NOT_FOUND_IN_MANAGER = "not-found-in-manager"
    CONTAINER_NOT_FOUND = "container-not-found"
    TERMINATED_UNKNOWN_CONTAINER = "terminated-unknown-container"
    ALREADY_TERMINATED = "already-terminated"
    FORCE_TERMINATED = "force-terminated"
    RESTARTING = "restarting"
    TASK_FINISHED = "task-finished"
    TASK_FAILED = "task-failed"
    TASK_TIMEOUT = "task-timeout"
    UNKNOWN = "unknown"


# Berth's causes that the manager's closed KernelLifecycleEventReason (Backend.AI 26.9) lacks,
# and the value a kernel_terminated event carries for each instead: a container that died of
# OOM or a full /dev/shm ended on its own (its exit code, 137 or 135, tells why); a phase that
# ran past its deadline hung; a reset ends kernels on the agent's side.
_MANAGER_REASON: dict[TerminationReason, str] = {
    TerminationReason.OOM_KILLED: "self-terminated",
    TerminationReason.SHM_EXHAUSTED: "self-terminated",
    TerminationReason.DEADLINE: "hang-timeout",
    TerminationReason.AGENT_RESET: "agent-termination",
}


def manager_reason(reason: TerminationReason) -> str:
    """The ``KernelLifecycleEventReason`` value the manager accepts for ``reason``."""
    return _MANAGER_REASON.get(reason, str(reason))


class SlotType(StrEnum):
    COUNT = "count"
    BYTES = "bytes"
    UNIQUE = "unique"
