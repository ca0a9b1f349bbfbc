"""Wire models of the events the agent publishes (Backend.AI names and JSON payloads).

Each event class carries its wire ``name`` and how it is delivered: *anycast* (one consumer
group reads it from the stream ``events``) and/or *broadcast* (everyone subscribed to the
channel ``events_all`` sees it).  Background-task events are broadcast and also cached under
``bgtask.{task_id}`` so that a late subscriber can read the last state.
"""

from __future__ import annotations

import json
from datetime import datetime
from typing import Any, ClassVar, Literal
from uuid import UUID

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from berth.types import TerminationReason, manager_reason


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
    user: UUID | None = None
    context_env: dict[str, str] = Field(default_factory=dict)
    severity: Literal["CRITICAL", "ERROR", "WARNING", "INFO", "DEBUG"] = "ERROR"

    @field_validator("context_env", mode="before")
    @classmethod
    def _env_strings(cls, value: Any) -> Any:
        """The manager reads every context value as a string."""
        if isinstance(value, dict):
            return {str(k): v if isinstance(v, str) else json.dumps(v) for k, v in value.items()}
        return value

    @field_validator("severity", mode="before")
    @classmethod
    def _upper(cls, value: Any) -> Any:
        return value.upper() if isinstance(value, str) else value


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
    protocol: Literal["http", "tcp", "preopen", "internal", "vnc", "rdp"]
    container_ports: list[int]
    host_ports: list[int | None]
    is_inference: bool = False


class UsedDevice(BaseModel):
    """One device a kernel holds: the slots it uses there (decimal strings)."""

    model_config = ConfigDict(frozen=True)

    model_name: str | None = None
    used: dict[str, str]
    processing_units: int | None = None
    memory_size: int | None = None


class UsedDevices(BaseModel):
    """``{device kind: {device id: UsedDevice}}`` under ``units``, as the manager reads it."""

    model_config = ConfigDict(frozen=True)

    units: dict[str, dict[str, UsedDevice]] = Field(default_factory=dict)


class KernelCreationInfo(BaseModel):
    model_config = ConfigDict(frozen=True)

    container_id: str
    kernel_host: str
    repl_in_port: int
    repl_out_port: int
    service_ports: list[ServicePortInfo]
    used_devices: UsedDevices


class KernelStartedEvent(KernelLifecycleEvent):
    name: ClassVar[str] = "kernel_started"
    creation_info: KernelCreationInfo


class KernelTerminatedEvent(KernelLifecycleEvent):
    """``reason`` is a value of the manager's closed ``KernelLifecycleEventReason``; Berth's
    finer cause (``oom-killed``, ``shm-exhausted``, ``deadline``…) travels in ``cause``, a
    field the manager ignores and Berth's own tools show."""

    name: ClassVar[str] = "kernel_terminated"
    reason: str = str(TerminationReason.UNKNOWN)
    cause: TerminationReason = TerminationReason.UNKNOWN
    exit_code: int = -1

    @model_validator(mode="before")
    @classmethod
    def _split_cause(cls, data: Any) -> Any:
        if isinstance(data, dict) and "cause" not in data and "reason" in data:
            cause = TerminationReason(data["reason"])
            data = {**data, "cause": cause, "reason": manager_reason(cause)}
        return data


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


class DoSyncKernelLogsEvent(AgentEvent):
    """Tells the manager a dead kernel's output waits in ``containerlog.{container_id}``."""

    name: ClassVar[str] = "do_sync_kernel_logs"
    kernel_id: str
    container_id: str


# ── service discovery ────────────────────────────────────────────────────────────────────


class ServiceEndpointInfo(BaseModel):
    model_config = ConfigDict(frozen=True)

    role: str
    scope: str
    address: str
    port: int
    protocol: str
    metadata: dict[str, Any] = Field(default_factory=dict)


class ServiceRegisteredEvent(AgentEvent):
    """Sent at start and then as the discovery heartbeat (see ``events/discovery.py``)."""

    name: ClassVar[str] = "service_registered"
    instance_id: str
    service_group: str
    display_name: str
    version: str
    labels: dict[str, str] = Field(default_factory=dict)
    endpoints: list[ServiceEndpointInfo] = Field(default_factory=list)
    startup_time: datetime
    config_hash: str = ""


class ServiceDeregisteredEvent(AgentEvent):
    name: ClassVar[str] = "service_deregistered"
    instance_id: str
    service_group: str


# ── images ───────────────────────────────────────────────────────────────────────────────


class ImageRefInfo(BaseModel):
    """The manager's ``ImageRef`` as its image events carry it."""

    model_config = ConfigDict(frozen=True)

    name: str
    project: str | None
    tag: str
    registry: str
    architecture: str
    is_local: bool


class ImagePullEvent(AgentEvent):
    image: str
    agent_id: str
    image_ref: ImageRefInfo | None = None


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
    KernelTerminatedEvent, DoSyncKernelLogsEvent, ExecutionStartedEvent,
    ExecutionFinishedEvent, ExecutionTimeoutEvent, SessionSuccessEvent, SessionFailureEvent,
    ImagePullStartedEvent, ImagePullFinishedEvent, ImagePullFailedEvent, BgtaskUpdatedEvent,
    BgtaskDoneEvent, BgtaskPartialSuccessEvent, BgtaskFailedEvent, BgtaskCancelledEvent,
    ServiceRegisteredEvent, ServiceDeregisteredEvent,
)

EVENTS_BY_NAME: dict[str, type[AgentEvent]] = {cls.name: cls for cls in ALL_EVENTS}


def parse_event(name: str, payload: str | bytes | dict[str, Any]) -> AgentEvent:
    """Rebuild an event from its wire name and JSON payload (used by tests and `events tail`)."""
    cls = EVENTS_BY_NAME[name]
    data = payload if isinstance(payload, dict) else json.loads(payload)
    return cls.model_validate(data)
