"""The role every event producer depends on, and an in-memory implementation for tests."""

from __future__ import annotations

from typing import Protocol

from berth.events.models import AgentEvent


class EventEmitter(Protocol):
    """Anything that accepts events without blocking (the real one is ``EventBus``)."""

    def emit(self, event: AgentEvent, *, coalesce: bool = False) -> None: ...


class RecordingEmitter:
    """Keeps every emitted event in order; used by unit tests and by CLIs that render progress."""

    def __init__(self) -> None:
        self.events: list[AgentEvent] = []

    def emit(self, event: AgentEvent, *, coalesce: bool = False) -> None:
        self.events.append(event)

    def names(self) -> list[str]:
        return [e.name for e in self.events]
