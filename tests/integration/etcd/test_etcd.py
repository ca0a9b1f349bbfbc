"""EtcdConfigSource against a real etcd 3.4."""

from __future__ import annotations

import asyncio
import uuid

import pytest

from berth.errors import EtcdError
from berth.events.discovery import ServiceRecord
from berth.events.etcd import EtcdConfigSource, apply_etcd_overrides
from berth.events.etcd_gateway import EtcdGateway, Event, EventType, prefix_end


def ns() -> str:
    return f"test-{uuid.uuid4().hex[:8]}"


async def test_global_config_is_read_as_nested_dicts(etcd_addr: str) -> None:
    async with EtcdConfigSource(etcd_addr, ns()) as etcd:
        await etcd.put("config/redis/addr", "127.0.0.1:6399")
        await etcd.put("config/redis/password", "pw")
        await etcd.put("volumes/_mount", "/mnt")
        await etcd.put("config/agent/api/pull-timeout", "99")
        await etcd.put("config/container/kernel-uid", "1001")
        await etcd.put_tree("config/plugins/accelerator", {"cuda": {"x y": "1"}})
        cfg = await etcd.read_global_config()
    assert cfg["redis"] == {"addr": "127.0.0.1:6399", "password": "pw"}
    assert cfg["volumes"] == {"_mount": "/mnt"}
    assert cfg["agent"] == {"api": {"pull-timeout": "99"}}
    assert cfg["plugins"] == {"accelerator": {"cuda": {"x y": "1"}}}
    local: dict[str, dict[str, object]] = {"api": {"pull-timeout": 7200, "push-timeout": None},
             "container": {"kernel-uid": -1, "port-range": [30000, 31000]},
             "redis": {"addr": "127.0.0.1:6379", "db": 4}}
    merged = apply_etcd_overrides(local, cfg)
    assert merged["api"] == {"pull-timeout": "99", "push-timeout": None}
    assert merged["container"] == {"kernel-uid": "1001", "port-range": [30000, 31000]}
    assert merged["redis"] == {"addr": "127.0.0.1:6399", "db": 4, "password": "pw"}
    assert local["api"] == {"pull-timeout": 7200, "push-timeout": None}


async def test_namespaces_are_isolated(etcd_addr: str) -> None:
    a, b = ns(), ns()
    async with EtcdConfigSource(etcd_addr, a) as ea, EtcdConfigSource(etcd_addr, b) as eb:
        await ea.put("config/redis/addr", "x")
        assert (await eb.read_global_config())["redis"] == {}


async def test_agent_registration_lifecycle(etcd_addr: str) -> None:
    async with EtcdConfigSource(etcd_addr, ns()) as etcd:
        await etcd.register_agent("i-node1", "10.0.0.5", 6009)
        assert await etcd.get("nodes/agents/i-node1") == "starting"
        await etcd.mark_running("i-node1")
        assert await etcd.get("nodes/agents/i-node1") == "running"
        assert await etcd.get_prefix("nodes/agents/i-node1") == {
            "ip": "10.0.0.5", "watcher_port": "6009"}
        await etcd.deregister_agent("i-node1")
        assert await etcd.get("nodes/agents/i-node1") is None
        assert await etcd.get_prefix("nodes/agents") == {}


async def test_service_discovery_registration_refresh_and_removal(etcd_addr: str) -> None:
    record = ServiceRecord("i-node1", "0.1.0", "10.0.0.5", 6003, "http", 100.0, 100.0)
    service_id = str(uuid.uuid5(uuid.NAMESPACE_DNS, "agent/10.0.0.5:6003"))
    async with EtcdConfigSource(etcd_addr, ns()) as etcd:
        await etcd.register_service(record)
        entry = (await etcd.get_prefix("ai/backend/service_discovery/agent"))[service_id]
        assert entry["id"] == service_id
        assert entry["endpoint"] == {"address": "10.0.0.5", "port": "6003", "protocol": "http",
                                     "prometheus_address": "10.0.0.5:6003"}
        assert entry["display_name"] == "agent-i-node1"
        assert entry["health_status"] == {"registration_time": "100.0",
                                          "last_heartbeat": "100.0"}
        await etcd.register_service(record.refreshed(160.0))
        entry = (await etcd.get_prefix("ai/backend/service_discovery/agent"))[service_id]
        assert entry["health_status"]["last_heartbeat"] == "160.0"
        await etcd.unregister_service(record)
        assert await etcd.get_prefix("ai/backend/service_discovery") == {}


async def test_wait_for_manager(etcd_addr: str) -> None:
    async with EtcdConfigSource(etcd_addr, ns()) as etcd:
        waiter = asyncio.create_task(etcd.wait_for_manager(timeout=5))
        await asyncio.sleep(0.3)
        assert not waiter.done()
        await etcd.put("nodes/manager/m1", "starting")  # not "up" yet
        await asyncio.sleep(0.2)
        assert not waiter.done()
        await etcd.put("nodes/manager/m1", "up")
        await asyncio.wait_for(waiter, 3)
        await etcd.wait_for_manager(timeout=1)  # already registered: returns at once


async def test_wait_for_manager_times_out(etcd_addr: str) -> None:
    async with EtcdConfigSource(etcd_addr, ns()) as etcd:
        with pytest.raises(TimeoutError):
            await etcd.wait_for_manager(timeout=0.3)


async def test_unreachable_etcd_is_etcd_error() -> None:
    src = EtcdConfigSource("127.0.0.1:1", "x", timeout=1)
    with pytest.raises(EtcdError):
        async with src:
            await src.get("config/redis/addr")


async def test_values_and_prefixes_round_trip(etcd_addr: str) -> None:
    async with EtcdConfigSource(etcd_addr, ns()) as etcd:
        await etcd.put("config/redis/password", "")  # etcd's JSON omits an empty value
        await etcd.put("config/redis/addr", "hôte:6379")
        await etcd.put("config/redisX", "a sibling, not under config/redis/")
        assert await etcd.get("config/redis/password") == ""
        assert await etcd.get_prefix("config/redis") == {"password": "", "addr": "hôte:6379"}
        await etcd.delete_prefix("config/redis")
        assert await etcd.get_prefix("config/redis") == {}
        assert await etcd.get("config/redisX") == "a sibling, not under config/redis/"


async def test_a_watch_sees_what_follows_its_creation(etcd_addr: str) -> None:
    host, port = etcd_addr.rsplit(":", 1)
    async with EtcdGateway(host, int(port)) as gw, await gw.watch(b"w/", prefix_end(b"w/")) as w:
        await gw.put(b"w/a", b"1")
        await gw.put(b"w/b", b"")
        await gw.put(b"wx", b"outside the range")
        assert await gw.delete_range(b"w/a") == 1
        events = []
        async for event in w:
            events.append(event)
            if len(events) == 3:
                break
    assert events == [Event(EventType.PUT, b"w/a", b"1"), Event(EventType.PUT, b"w/b", b""),
                      Event(EventType.DELETE, b"w/a", b"")]


async def test_wait_for_manager_sees_a_manager_that_comes_up_at_once(etcd_addr: str) -> None:
    async with EtcdConfigSource(etcd_addr, ns()) as etcd, asyncio.TaskGroup() as tg:
        tg.create_task(etcd.wait_for_manager(timeout=5))
        tg.create_task(etcd.put("nodes/manager/m1", "up"))
