from __future__ import annotations

import asyncio
import json

from click.testing import CliRunner

from berth.cli.events import events_group
from berth.events import EventBus, ExecutionStartedEvent

from .conftest import RedisProcess


async def test_events_tail_prints_stream_entries(redis_server: RedisProcess) -> None:
    async with EventBus(redis_server.url, "agent-cli", 10) as bus:
        bus.emit(ExecutionStartedEvent(session_id="s1"))
        bus.emit(ExecutionStartedEvent(session_id="s2"))
        assert await bus.flush(3)
    res = await asyncio.to_thread(CliRunner().invoke, events_group, [
        "tail", "--redis-url", redis_server.url, "--from-start", "-n", "2", "--json"])
    assert res.exit_code == 0, res.output
    lines = [json.loads(x) for x in res.output.splitlines()]
    assert [(x["name"], x["source"], x["payload"]["session_id"]) for x in lines] == [
        ("execution_started", "agent-cli", "s1"), ("execution_started", "agent-cli", "s2")]


def test_events_tail_reports_unreachable_redis() -> None:
    from .conftest import free_port
    res = CliRunner().invoke(events_group, ["tail", "--redis-url",
                                            f"redis://127.0.0.1:{free_port()}/4", "-n", "1"])
    assert res.exit_code == 1 and "redis" in res.output.lower()
