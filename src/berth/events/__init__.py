"""Manager-facing signals: lifecycle events, heartbeats and the Redis keys the Manager reads.

`EtcdConfigSource` and `apply_etcd_overrides` are imported on first use: etcd's client (etcd's
JSON gateway over aiohttp) is not needed by everything that imports this package, and most
agents have no etcd configured.
"""

from typing import TYPE_CHECKING, Any

from berth.events.agent_errors import ErrorReporter, agent_error_payload
from berth.events.backlog import Backlog, Envelope
from berth.events.bgtask import (
    BackgroundTaskManager,
    ProgressReporter,
    TaskFn,
    TaskRecord,
    TaskStatus,
)
from berth.events.bus import (
    BROADCAST_CHANNEL,
    STREAM_KEY,
    EventBus,
    EventTransport,
    ManagerStore,
    RedisEventTransport,
    StreamEntry,
    decode_log_chunk,
    encode_log_chunk,
    redis_url_with_db,
    tail_events,
)
from berth.events.discovery import Publisher, ServiceRecord
from berth.events.emitter import EventEmitter, RecordingEmitter
from berth.events.heartbeat import Heartbeat
from berth.events.manager_link import ManagerLink
from berth.events.models import (
    ALL_EVENTS,
    EVENTS_BY_NAME,
    AgentErrorEvent,
    AgentEvent,
    AgentHeartbeatEvent,
    AgentInfo,
    AgentStartedEvent,
    AgentTerminatedEvent,
    BgtaskCancelledEvent,
    BgtaskDoneEvent,
    BgtaskEvent,
    BgtaskFailedEvent,
    BgtaskPartialSuccessEvent,
    BgtaskUpdatedEvent,
    ExecutionFinishedEvent,
    ExecutionStartedEvent,
    ExecutionTimeoutEvent,
    ImagePullFailedEvent,
    ImagePullFinishedEvent,
    ImagePullStartedEvent,
    KernelCreatingEvent,
    KernelCreationInfo,
    KernelPreparingEvent,
    KernelPullingEvent,
    KernelStartedEvent,
    KernelTerminatedEvent,
    ServicePortInfo,
    SessionFailureEvent,
    SessionSuccessEvent,
    SlotQuantity,
    parse_event,
)

__all__ = [
    "ALL_EVENTS",
    "BROADCAST_CHANNEL",
    "EVENTS_BY_NAME",
    "STREAM_KEY",
    "AgentErrorEvent",
    "AgentEvent",
    "AgentHeartbeatEvent",
    "AgentInfo",
    "AgentStartedEvent",
    "AgentTerminatedEvent",
    "BackgroundTaskManager",
    "Backlog",
    "BgtaskCancelledEvent",
    "BgtaskDoneEvent",
    "BgtaskEvent",
    "BgtaskFailedEvent",
    "BgtaskPartialSuccessEvent",
    "BgtaskUpdatedEvent",
    "Envelope",
    "ErrorReporter",
    "EtcdConfigSource",
    "EventBus",
    "EventEmitter",
    "EventTransport",
    "ExecutionFinishedEvent",
    "ExecutionStartedEvent",
    "ExecutionTimeoutEvent",
    "Heartbeat",
    "ImagePullFailedEvent",
    "ImagePullFinishedEvent",
    "ImagePullStartedEvent",
    "KernelCreatingEvent",
    "KernelCreationInfo",
    "KernelPreparingEvent",
    "KernelPullingEvent",
    "KernelStartedEvent",
    "KernelTerminatedEvent",
    "ManagerLink",
    "ManagerStore",
    "ProgressReporter",
    "Publisher",
    "RecordingEmitter",
    "RedisEventTransport",
    "ServicePortInfo",
    "ServiceRecord",
    "SessionFailureEvent",
    "SessionSuccessEvent",
    "SlotQuantity",
    "StreamEntry",
    "TaskFn",
    "TaskRecord",
    "TaskStatus",
    "agent_error_payload",
    "apply_etcd_overrides",
    "decode_log_chunk",
    "encode_log_chunk",
    "parse_event",
    "redis_url_with_db",
    "tail_events",
]

if TYPE_CHECKING:
    from berth.events.etcd import EtcdConfigSource, apply_etcd_overrides

_LAZY = frozenset({"EtcdConfigSource", "apply_etcd_overrides"})


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        from berth.events import etcd

        return getattr(etcd, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
