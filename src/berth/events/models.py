"""Wire models of the events the agent publishes (Backend.AI names and JSON payloads).

Each event class carries its wire ``name`` and how it is delivered: *anycast* (one consumer
group reads it from the stream ``events``) and/or *broadcast* (everyone subscribed to the
channel ``events_all`` sees it).  Background-task events are broadcast and also cached under
``bgtask.{task_id}`` so that a late subscriber can read the last state.
"""

from __future__ import annotations

import json
from typing import Any, ClassVar

from pydantic import BaseModel, ConfigDict, Field

from berth.types import TerminationReason


class AgentEvent(BaseModel):
    """Base of every event. ``payload()`` is what goes on the wire."""

    model_config = ConfigDict(frozen=True)

    name: ClassVar[str] = ""
    anycast: ClassVar[bool] = True
    broadcast: ClassVar[bool] = False

    def payload(self) -> dict[str, Any]:
        return self.model_dump(mode="json")

    def payload_json(self) -> str:
        return json.dumps(self.payload(), separators=(",", ":"))

    def cache_key(self) -> str | None:
        """Key under which a broadcast event is also SET (bgtask events), or None."""
        return None


# ── agent ────────────────────────────────────────────────────────────────────────────────


class SlotQuantity(BaseModel):
    model_config = ConfigDict(frozen=True)

    resource_type: str
    quantity: str


class AgentInfo(BaseModel):
    """What the Manager learns from each heartbeat (reference §8.3)."""

    model_config = ConfigDict(frozen=True)

    ip: str
    region: str
    scaling_group: str
    addr: str
    public_key: str | None
    public_host: str
    available_resource_slots: list[SlotQuantity]
    slot_key_and_units: dict[str, str]
    version: str
    compute_plugins: dict[str, dict[str, Any]]
    architecture: str
    auto_terminate_abusing_kernel: bool = False


class AgentStartedEvent(AgentEvent):
    name: ClassVar[str] = "agent_started"
    reason: str = "self-started"


class AgentTerminatedEvent(AgentEvent):
    name: ClassVar[str] = "agent_terminated"
    reason: str = "shutdown"


class AgentHeartbeatEvent(AgentEvent):
    name: ClassVar[str] = "agent_heartbeat"
    agent_info: AgentInfo


class AgentErrorEvent(AgentEvent):
    name: ClassVar[str] = "agent_error"
    message: str
    traceback: str | None = None
    user: str | None = None
    context_env: dict[str, Any] = Field(default_factory=dict)
    severity: str = "error"


# ── kernels and sessions ─────────────────────────────────────────────────────────────────


class KernelLifecycleEvent(AgentEvent):
    anycast: ClassVar[bool] = True
    broadcast: ClassVar[bool] = True
    kernel_id: str
    session_id: str
    reason: str = ""


class KernelPreparingEvent(KernelLifecycleEvent):
    name: ClassVar[str] = "kernel_preparing"


class KernelPullingEvent(KernelLifecycleEvent):
    """``reason`` carries the canonical name of the image being pulled."""

    name: ClassVar[str] = "kernel_pulling"


class KernelCreatingEvent(KernelLifecycleEvent):
    name: ClassVar[str] = "kernel_creating"


class ServicePortInfo(BaseModel):
    model_config = ConfigDict(frozen=True)

    name: str
    protocol: str
    container_ports: list[int]
    host_ports: list[int | None]
    is_inference: bool = False


class KernelCreationInfo(BaseModel):
    model_config = ConfigDict(frozen=True)

    container_id: str
    kernel_host: str
    repl_in_port: int = 0
    repl_out_port: int = 0
    service_ports: list[ServicePortInfo] = Field(default_factory=list)
    used_devices: dict[str, Any] = Field(default_factory=dict)


class KernelStartedEvent(KernelLifecycleEvent):
    name: ClassVar[str] = "kernel_started"
    creation_info: KernelCreationInfo


class KernelTerminatedEvent(KernelLifecycleEvent):
    name: ClassVar[str] = "kernel_terminated"
    reason: TerminationReason = TerminationReason.UNKNOWN
    exit_code: int = -1


class ExecutionStartedEvent(AgentEvent):
    name: ClassVar[str] = "execution_started"
    session_id: str


class ExecutionFinishedEvent(AgentEvent):
    name: ClassVar[str] = "execution_finished"
    session_id: str


class ExecutionTimeoutEvent(AgentEvent):
    name: ClassVar[str] = "execution_timeout"
    session_id: str


class SessionResultEvent(AgentEvent):
    broadcast: ClassVar[bool] = True
    session_id: str
    reason: str = ""
    exit_code: int = -1


class SessionSuccessEvent(SessionResultEvent):
    name: ClassVar[str] = "session_success"


class SessionFailureEvent(SessionResultEvent):
    name: ClassVar[str] = "session_failure"


# ── images ───────────────────────────────────────────────────────────────────────────────


class ImagePullEvent(AgentEvent):
    image: str
    agent_id: str
    image_ref: str | None = None


class ImagePullStartedEvent(ImagePullEvent):
    name: ClassVar[str] = "image_pull_started"
    timestamp: float


class ImagePullFinishedEvent(ImagePullEvent):
    name: ClassVar[str] = "image_pull_finished"
    timestamp: float
    msg: str | None = None


class ImagePullFailedEvent(ImagePullEvent):
    name: ClassVar[str] = "image_pull_failed"
    msg: str


# ── background tasks ─────────────────────────────────────────────────────────────────────


class BgtaskEvent(AgentEvent):
    anycast: ClassVar[bool] = False
    broadcast: ClassVar[bool] = True
    task_id: str
    message: str | None = None

    def cache_key(self) -> str | None:
        return f"bgtask.{self.task_id}"


class BgtaskUpdatedEvent(BgtaskEvent):
    name: ClassVar[str] = "bgtask_updated"
    current_progress: float
    total_progress: float


class BgtaskDoneEvent(BgtaskEvent):
    name: ClassVar[str] = "bgtask_done"


class BgtaskPartialSuccessEvent(BgtaskEvent):
    name: ClassVar[str] = "bgtask_partial_success"
    errors: list[str] = Field(default_factory=list)


class BgtaskFailedEvent(BgtaskEvent):
    name: ClassVar[str] = "bgtask_failed"


class BgtaskCancelledEvent(BgtaskEvent):
    name: ClassVar[str] = "bgtask_cancelled"


ALL_EVENTS: tuple[type[AgentEvent], ...] = (
    AgentStartedEvent, AgentTerminatedEvent, AgentHeartbeatEvent, AgentErrorEvent,
    KernelPreparingEvent, KernelPullingEvent, KernelCreatingEvent, KernelStartedEvent,
    KernelTerminatedEvent, ExecutionStartedEvent, ExecutionFinishedEvent, ExecutionTimeoutEvent,
    SessionSuccessEvent, SessionFailureEvent, ImagePullStartedEvent, ImagePullFinishedEvent,
    ImagePullFailedEvent, BgtaskUpdatedEvent, BgtaskDoneEvent, BgtaskPartialSuccessEvent,
    BgtaskFailedEvent, BgtaskCancelledEvent,
)

EVENTS_BY_NAME: dict[str, type[AgentEvent]] = {cls.name: cls for cls in ALL_EVENTS}


def parse_event(name: str, payload: str | bytes | dict[str, Any]) -> AgentEvent:
    """Rebuild an event from its wire name and JSON payload (used by tests and `events tail`)."""
    cls = EVENTS_BY_NAME[name]
    data = payload if isinstance(payload, dict) else json.loads(payload)
    return cls.model_validate(data)
