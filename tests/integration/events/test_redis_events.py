"""EventBus, Heartbeat and ManagerStore against a real redis-server."""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from typing import Any

import msgpack
import redis.asyncio as aioredis

from berth.events import (
    AgentHeartbeatEvent,
    AgentInfo,
    BgtaskDoneEvent,
    EventBus,
    ExecutionStartedEvent,
    Heartbeat,
    KernelCreatingEvent,
    KernelCreationInfo,
    KernelPreparingEvent,
    KernelStartedEvent,
    KernelTerminatedEvent,
    ManagerStore,
    decode_log_chunk,
    parse_event,
    redis_url_with_db,
    tail_events,
)
from berth.events.discovery import ServiceRecord
from berth.events.models import UsedDevices
from berth.types import TerminationReason

from .conftest import RedisProcess


async def read_stream(url: str) -> list[tuple[str, str, dict[str, Any]]]:
    r = _redis(url)
    try:
        entries = await r.xrange("events")
    finally:
        await r.aclose()
    return [(f[b"name"].decode(), f[b"source"].decode(), json.loads(f[b"payload"]))
            for _id, f in entries]


def _redis(url: str) -> Any:
    return aioredis.Redis.from_url(url)


def info() -> AgentInfo:
    return AgentInfo(ip="127.0.0.1", region="local", scaling_group="default",
                     addr="tcp://127.0.0.1:6011", public_key=None, public_host="127.0.0.1",
                     available_resource_slots=[], slot_key_and_units={"cpu": "count"},
                     version="0.1.0", compute_plugins={}, architecture="x86_64")


async def test_kernel_life_events_in_order_on_stream_and_channel(redis_server: RedisProcess) -> None:
    sub = _redis(redis_server.url)
    ps = sub.pubsub()
    await ps.subscribe("events_all")
    await ps.get_message(timeout=1)  # subscribe confirmation
    life = [
        KernelPreparingEvent(kernel_id="k1", session_id="s1"),
        KernelCreatingEvent(kernel_id="k1", session_id="s1"),
        KernelStartedEvent(kernel_id="k1", session_id="s1", creation_info=KernelCreationInfo(
            container_id="c1", kernel_host="127.0.0.1", repl_in_port=0, repl_out_port=0,
            service_ports=[], used_devices=UsedDevices())),
        KernelTerminatedEvent(kernel_id="k1", session_id="s1",
                              reason=TerminationReason.USER_REQUESTED, exit_code=0),
    ]
    async with EventBus(redis_server.url, "agent-x", 100) as bus:
        for e in life:
            bus.emit(e)
        assert await bus.flush(3)
    got = await read_stream(redis_server.url)
    assert [(n, s) for n, s, _ in got] == [(e.name, "agent-x") for e in life]
    assert [parse_event(n, p) for n, _, p in got] == life
    assert got[-1][2] == {"kernel_id": "k1", "session_id": "s1", "reason": "user-requested",
                          "cause": "user-requested", "exit_code": 0}
    published = []
    while (m := await ps.get_message(ignore_subscribe_messages=True, timeout=1)) is not None:
        published.append(json.loads(m["data"]))
    await ps.aclose()
    await sub.aclose()
    assert [p["name"] for p in published] == [e.name for e in life]
    assert published[0]["source"] == "agent-x"
    # The manager's broadcast parser takes the payload as a JSON string, not an object.
    assert [parse_event(p["name"], p["payload"]) for p in published] == life
    assert all(isinstance(p["payload"], str) and isinstance(p["metadata"], str)
               for p in published)


async def test_bgtask_event_is_cached_not_streamed(redis_server: RedisProcess) -> None:
    async with EventBus(redis_server.url, "a", 10) as bus:
        bus.emit(BgtaskDoneEvent(task_id="t9", message="done"))
        assert await bus.flush(3)
    r = _redis(redis_server.url)
    cached = json.loads(await r.get("bgtask.t9"))
    ttl = await r.ttl("bgtask.t9")
    await r.aclose()
    assert cached["name"] == "bgtask_done"
    assert json.loads(cached["payload"])["message"] == "done"
    assert 0 < ttl <= 300
    assert await read_stream(redis_server.url) == []


async def test_heartbeats_at_period_and_installed_images(redis_server: RedisProcess) -> None:
    store = ManagerStore(redis_server.url, "agent-h")

    async def get_info() -> AgentInfo:
        return info()

    async def images() -> list[dict[str, str]]:
        return [{"canonical": "local/busybox:latest", "digest": "sha256:ab",
                 "architecture": "x86_64"}]

    async with EventBus(redis_server.url, "agent-h", 100) as bus:
        async with Heartbeat(bus, get_info, 0.25, images=images, store=store):
            await asyncio.sleep(0.9)
        assert await bus.flush(3)
    got = await read_stream(redis_server.url)
    assert [n for n, _, _ in got] == ["agent_heartbeat"] * 4
    assert AgentHeartbeatEvent.model_validate(got[0][2]).agent_info == info()
    r = _redis(redis_url_with_db(redis_server.url, 3))
    stored = json.loads(await r.get("installed_image:agent-h"))
    await r.aclose()
    await store.close()
    assert stored[0]["canonical"] == "local/busybox:latest"


async def test_redis_outage_buffers_and_drains_in_order(redis_server: RedisProcess) -> None:
    """Stands in for "Redis down for 30 s": 2 s of outage with events produced throughout."""
    async with EventBus(redis_server.url, "agent-o", 1000, retry_max=0.3) as bus:
        bus.emit(ExecutionStartedEvent(session_id="before"))
        assert await bus.flush(3)
        redis_server.stop()
        for i in range(40):
            bus.emit(ExecutionStartedEvent(session_id=f"during-{i}"))
            await asyncio.sleep(0.05)
        assert not bus.connected and bus.pending == 40
        redis_server.start()  # an empty server: the stream only has what is sent after
        assert await bus.flush(5)
        assert bus.connected and bus.dropped == 0
    got = await read_stream(redis_server.url)
    assert [p["session_id"] for _, _, p in got] == [f"during-{i}" for i in range(40)]


async def test_manager_store_keys(redis_server: RedisProcess) -> None:
    store = ManagerStore(redis_server.url, "agent-s")
    await store.write_kernel_stats("k1", {"cpu_util": {"current": "1.5"}})
    await store.write_node_stats({"node": {}, "devices": {}}, ttl=120)
    await store.write_container_count(3)
    await store.mark_kernel_presence(["k1", "k2"])
    await store.mark_commits(["k3"])
    record = ServiceRecord("agent-s", "0.1.0", "127.0.0.1", 6003, "http", 10.0, 70.0)
    await store.write_service_record(record)
    await store.write_slot_metadata({"cpu": {"slot_name": "cpu", "display_unit": "Core"}})
    n = await store.push_container_logs("c1", b"x" * (64 * 1024 + 10))
    await store.close()
    stat = _redis(redis_url_with_db(redis_server.url, 0))
    logs = _redis(redis_url_with_db(redis_server.url, 6))
    live = _redis(redis_url_with_db(redis_server.url, 2))
    try:
        assert msgpack.unpackb(await stat.get("k1")) == {"cpu_util": {"current": "1.5"}}
        assert 0 < await stat.ttl("agent-s") <= 120
        assert await stat.get("container_count.agent-s") == b"3"
        chunks = await logs.lrange("containerlog.c1", 0, -1)
        assert n == 2 and b"".join(decode_log_chunk(c) for c in chunks) == b"x" * (64 * 1024 + 10)
        for kid in ("k1", "k2"):
            mark = await live.hgetall(f"kernel:presence:{kid}")
            assert mark[b"presence"] == b"1"
            assert abs(int(mark[b"last_presence"]) - time.time()) < 5  # int() as the manager
        assert await stat.get("kernel.k3.commit") == b"ongoing"
        assert 0 < await stat.ttl("kernel.k3.commit") <= 13
        sd_key = f"service_discovery.agent.{record.service_id}"
        sd = {k.decode(): json.loads(v) for k, v in (await stat.hgetall(sd_key)).items()}
        assert sd["id"] == str(uuid.uuid5(uuid.NAMESPACE_DNS, "agent/127.0.0.1:6003"))
        assert sd["health_status"] == {"registration_time": 10.0, "last_heartbeat": 70.0}
        assert 0 < await stat.ttl(sd_key) <= 180
        assert json.loads(await stat.hget("computer.metadata", "cpu"))["display_unit"] == "Core"
    finally:
        for c in (stat, logs, live):
            await c.aclose()


async def test_tail_events_yields_new_entries(redis_server: RedisProcess) -> None:
    async with EventBus(redis_server.url, "agent-t", 10) as bus:
        bus.emit(ExecutionStartedEvent(session_id="old"))
        assert await bus.flush(3)
        agen = tail_events(redis_server.url, from_start=True, block_ms=200)
        first = await anext(agen)
        bus.emit(ExecutionStartedEvent(session_id="new"))
        second = await anext(agen)
        await agen.aclose()
    assert (first.name, json.loads(first.payload)["session_id"]) == ("execution_started", "old")
    assert json.loads(second.payload)["session_id"] == "new"
