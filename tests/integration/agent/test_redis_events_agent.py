"""Issue 7 through the wired agent: a real agent process publishes a kernel's life, its start and
its heartbeats on the `events` stream (DB 4) of a real redis-server; a Redis outage loses none
of a kernel's events and stops no kernel."""

from __future__ import annotations

import asyncio
import itertools
import json
import statistics
import subprocess
import time
import uuid
from dataclasses import dataclass
from typing import Any

import pytest
import redis.asyncio as aioredis
from redis.exceptions import RedisError

from berth.events import STREAM_KEY

from .conftest import AgentFactory, RedisServer, eventually, kernel_config

KERNEL_LIFE = ["kernel_preparing", "kernel_creating", "kernel_started", "kernel_terminated"]


@dataclass(frozen=True)
class Entry:
    at_ms: int  # Redis server time, from the stream entry id
    name: str
    source: str
    payload: dict[str, Any]


class StreamWatcher:
    """Reads the whole `events` stream incrementally (XRANGE after the last id seen); a Redis
    that is down is simply retried on the next poll."""

    def __init__(self, server: RedisServer) -> None:
        self.server = server
        self.entries: list[Entry] = []
        self._last = "-"

    async def poll(self) -> list[Entry]:
        client = aioredis.Redis(host="127.0.0.1", port=self.server.port, db=4,
                                socket_timeout=2, decode_responses=True)
        try:
            start = self._last if self._last == "-" else f"({self._last}"
            reply: Any = await client.xrange(STREAM_KEY, min=start)
            for entry_id, fields in reply:
                self._last = entry_id
                self.entries.append(Entry(int(entry_id.split("-")[0]), fields["name"],
                                          fields["source"], json.loads(fields["payload"])))
        except (RedisError, OSError):
            pass
        finally:
            await client.aclose()
        return self.entries

    def restarted(self) -> None:
        """A fresh redis-server has an empty stream: read it from the start."""
        self._last = "-"

    def kernel_events(self, kernel_id: str) -> list[Entry]:
        return [e for e in self.entries
                if e.name.startswith("kernel_") and e.payload.get("kernel_id") == kernel_id]

    async def until(self, check: Any, timeout: float, what: str) -> None:
        async def polled() -> bool:
            await self.poll()
            return bool(check())
        await eventually(polled, timeout=timeout, what=what)


def debug_toml(server: RedisServer, heartbeat: float) -> str:
    toml: str = server.toml
    return toml + f"[debug]\nheartbeat-interval = {heartbeat}\n"


def running(container_id: str) -> bool:
    out = subprocess.run(["docker", "inspect", "-f", "{{.State.Running}}", container_id],
                         check=False, capture_output=True, text=True)
    return out.stdout.strip() == "true"


@pytest.mark.timeout(120)
async def test_kernel_life_agent_start_and_heartbeats_on_the_stream(
        agent_factory: AgentFactory, redis_server: RedisServer) -> None:
    agent = await agent_factory(debug_toml(redis_server, 0.5))
    watch = StreamWatcher(redis_server)
    kid = str(uuid.uuid4())
    async with agent.client() as c:
        created = await c.create_kernels(kid, [kid], [kernel_config()], {})
        await c.destroy_kernel(kid, kid)
    await watch.until(lambda: len(watch.kernel_events(kid)) >= 4, 10, "the kernel's 4 events")
    life = watch.kernel_events(kid)
    assert [e.name for e in life] == KERNEL_LIFE
    assert all(e.source == agent.agent_id and e.payload["session_id"] == kid for e in life)
    info = life[2].payload["creation_info"]
    assert info["container_id"] == created[0]["container_id"]
    assert "http-server" in {p["name"] for p in info["service_ports"]}, info
    assert life[3].payload["reason"] == "user-requested"
    assert isinstance(life[3].payload["exit_code"], int) and life[3].payload["exit_code"] >= 0

    started = [e for e in watch.entries if e.name == "agent_started"]
    assert started and started[0].source == agent.agent_id
    # The manager registers a node from its heartbeat and skips agent_started from a stranger.
    names = [e.name for e in watch.entries]
    assert names.index("agent_heartbeat") < names.index("agent_started")
    await watch.until(lambda: any(e.name == "do_sync_kernel_logs" for e in watch.entries), 10,
                      "do_sync_kernel_logs after the kernel's output was shipped")
    (sync,) = [e for e in watch.entries if e.name == "do_sync_kernel_logs"]
    assert sync.payload == {"kernel_id": kid, "container_id": created[0]["container_id"]}

    await watch.until(lambda: sum(e.name == "agent_heartbeat" for e in watch.entries) >= 8,
                      10, "8 heartbeats")
    beats = [e for e in watch.entries if e.name == "agent_heartbeat"]
    gaps = [(b.at_ms - a.at_ms) / 1000 for a, b in itertools.pairwise(beats)]
    assert 0.4 <= statistics.median(gaps) <= 0.7, gaps
    agent_info = beats[-1].payload["agent_info"]
    slots = {s["resource_type"]: s["quantity"] for s in agent_info["available_resource_slots"]}
    assert {"cpu", "mem"} <= set(slots) and float(slots["cpu"]) > 0, slots
    assert agent_info["addr"] == agent.addr


@pytest.mark.timeout(150)
async def test_redis_outage_loses_no_kernel_event_and_stops_no_kernel(
        agent_factory: AgentFactory, redis_server: RedisServer) -> None:
    agent = await agent_factory(debug_toml(redis_server, 0.5))
    watch = StreamWatcher(redis_server)
    await watch.until(lambda: any(e.name == "agent_started" for e in watch.entries), 10,
                      "agent_started")

    redis_server.kill()
    down_at = time.monotonic()
    kid = str(uuid.uuid4())
    async with agent.client() as c:
        created = await c.create_kernels(kid, [kid], [kernel_config()], {})
        cid = created[0]["container_id"]
        await asyncio.sleep(2)
        assert await c.check_running(kid) and running(cid)
        status = await c.get_status()
        assert status["events"]["pending"] >= 3, status["events"]  # waiting in the backlog
        await c.destroy_kernel(kid, kid)
    await asyncio.sleep(max(0.0, 5 - (time.monotonic() - down_at)))  # down for >= 5 s
    redis_server.start()
    watch.restarted()

    await watch.until(lambda: len(watch.kernel_events(kid)) >= 4, 20,
                      "the kernel's events after Redis came back")
    assert [e.name for e in watch.kernel_events(kid)] == KERNEL_LIFE
    assert watch.kernel_events(kid)[2].payload["creation_info"]["container_id"] == cid
    assert watch.kernel_events(kid)[3].payload["reason"] == "user-requested"
    await watch.until(lambda: sum(e.name == "agent_heartbeat" for e in watch.entries) >= 3, 10,
                      "heartbeats resumed")
    async with agent.client() as c:
        events = (await c.get_status())["events"]
    assert events["dropped"] == 0 and events["pending"] == 0, events
