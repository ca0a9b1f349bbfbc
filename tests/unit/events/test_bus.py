"""EventBus over an in-memory transport that can be switched off, like a Redis outage."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence

import pytest

from berth.errors import EventBusError
from berth.events import (
    AgentStartedEvent,
    BgtaskDoneEvent,
    Envelope,
    EventBus,
    ExecutionStartedEvent,
)


class FlakyTransport:
    def __init__(self) -> None:
        self.up = True
        self.sent: list[Envelope] = []
        self.attempts = 0
        self.closed = False

    async def send(self, batch: Sequence[Envelope]) -> None:
        self.attempts += 1
        await asyncio.sleep(0)
        if not self.up:
            raise EventBusError("down")
        self.sent.extend(batch)

    async def close(self) -> None:
        self.closed = True


def make_bus(t: FlakyTransport, size: int = 100) -> EventBus:
    return EventBus("redis://unused", "agent-1", size, transport=t, retry_min=0.01,
                    retry_max=0.02, batch_size=7)


def ev(i: int) -> ExecutionStartedEvent:
    return ExecutionStartedEvent(session_id=f"s{i}")


async def test_events_go_out_in_order_with_source_and_delivery() -> None:
    t = FlakyTransport()
    async with make_bus(t) as bus:
        bus.emit(AgentStartedEvent())
        bus.emit(BgtaskDoneEvent(task_id="t", message="ok"))
        assert await bus.flush(1)
    assert [(e.name, e.source, e.anycast, e.broadcast, e.cache_key) for e in t.sent] == [
        ("agent_started", "agent-1", True, False, None),
        ("bgtask_done", "agent-1", False, True, "bgtask.t"),
    ]
    assert t.closed


async def test_emit_never_blocks_and_backlog_drains_after_outage() -> None:
    t = FlakyTransport()
    t.up = False
    async with make_bus(t) as bus:
        for i in range(50):
            bus.emit(ev(i))
        await asyncio.sleep(0.05)
        assert not bus.connected and bus.pending == 50 and t.sent == []
        t.up = True
        assert await bus.flush(2)
        assert bus.connected
    assert [e.payload for e in t.sent] == [ev(i).payload_json() for i in range(50)]


async def test_overflow_drops_oldest_with_counted_warning(caplog: pytest.LogCaptureFixture) -> None:
    t = FlakyTransport()
    t.up = False
    caplog.set_level(logging.WARNING, logger="berth.events.bus")
    async with make_bus(t, size=10) as bus:
        for i in range(25):
            bus.emit(ev(i))
        assert bus.dropped == 15
        t.up = True
        assert await bus.flush(2)
    assert [e.payload for e in t.sent] == [ev(i).payload_json() for i in range(15, 25)]
    assert any("dropped oldest" in r.getMessage() for r in caplog.records)


async def test_coalesced_heartbeats_keep_only_newest_while_down() -> None:
    t = FlakyTransport()
    t.up = False
    async with make_bus(t) as bus:
        bus.emit(AgentStartedEvent(reason="a"), coalesce=True)
        bus.emit(ev(1))
        bus.emit(AgentStartedEvent(reason="b"), coalesce=True)
        t.up = True
        assert await bus.flush(2)
    assert [e.name for e in t.sent] == ["execution_started", "agent_started"]
    assert '"b"' in t.sent[1].payload


async def test_flush_times_out_while_down_and_close_still_returns() -> None:
    t = FlakyTransport()
    t.up = False
    bus = make_bus(t)
    await bus.start()
    bus.emit(ev(0))
    assert not await bus.flush(0.05)
    await bus.close(flush_timeout=0.05)
    assert t.closed and bus.pending == 1
