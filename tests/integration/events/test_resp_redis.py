"""The agent's own RESP client against a real redis-server, read back with redis-py."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
import redis.asyncio as aioredis

from berth.config import AgentConfig
from berth.errors import EventBusError
from berth.events import ManagerStore
from berth.events.manager_link import redis_url
from berth.events.resp import RedisClient, RedisConnectionError, RedisReplyError

from .conftest import RedisProcess

PASSWORD = "p@ss/w:rd %?#"  # every character a URL treats specially


def config_for(server: RedisProcess, password: str) -> AgentConfig:
    return AgentConfig.model_validate({
        "agent": {"rpc-allow-plain": True},
        "redis": {"addr": f"127.0.0.1:{server.port}", "password": password}})


async def test_a_password_with_url_characters_reaches_the_server_intact(tmp_path: Path) -> None:
    with RedisProcess(tmp_path, password=PASSWORD) as server:
        url = redis_url(config_for(server, PASSWORD))
        assert url is not None
        store = ManagerStore(url, "agent-pw")
        await store.write_container_count(3)
        await store.close()
        check = aioredis.Redis(host="127.0.0.1", port=server.port, password=PASSWORD, db=0)
        try:
            assert await check.get("container_count.agent-pw") == b"3"
            assert 86000 < await check.ttl("container_count.agent-pw") <= 86400
        finally:
            await check.aclose()


async def test_a_wrong_password_is_an_event_bus_error(tmp_path: Path) -> None:
    with RedisProcess(tmp_path, password=PASSWORD) as server:
        url = redis_url(config_for(server, "not it"))
        assert url is not None
        store = ManagerStore(url, "agent-pw")
        with pytest.raises(EventBusError) as err:
            await store.write_container_count(3)
        assert err.value.data["cause"] == "RedisReplyError"
        await store.close()


async def test_values_and_replies_of_every_shape(redis_server: RedisProcess) -> None:
    client = RedisClient(redis_server.url, timeout=5)
    big = bytes(range(256)) * 8192  # 2 MiB with every byte value, CRLFs included
    try:
        assert await client.execute("SET", "big", big) == "OK"
        assert await client.execute("GET", "big") == big
        assert await client.execute("GET", "missing") is None
        assert await client.pipeline([("RPUSH", "l", "a", "b"), ("LRANGE", "l", 0, -1),
                                      ("DEL", "l", "big")]) == [2, [b"a", b"b"], 2]
        assert await client.pipeline([("HSET", "h", "f", "1"), ("EXPIRE", "h", 30)],
                                     transaction=True) == [1, 1]
        with pytest.raises(RedisReplyError, match="WRONGTYPE"):
            await client.execute("LPUSH", "h", "x")
        assert await client.execute("HGET", "h", "f") == b"1"  # still in step after an error
    finally:
        await client.aclose()
    check = aioredis.Redis.from_url(redis_server.url)
    try:
        assert await check.hgetall("h") == {b"f": b"1"}
    finally:
        await check.aclose()


async def test_a_restarted_server_is_reconnected_to(redis_server: RedisProcess) -> None:
    client = RedisClient(redis_server.url, timeout=2)
    try:
        assert await client.execute("SET", "k", "1") == "OK"
        redis_server.stop()
        with pytest.raises(RedisConnectionError):
            await client.execute("SET", "k", "2")
        redis_server.start()
        assert await client.execute("SET", "k", "3") == "OK"
        assert await client.execute("GET", "k") == b"3"
    finally:
        await client.aclose()


async def test_concurrent_requests_each_get_their_own_reply(redis_server: RedisProcess) -> None:
    client = RedisClient(redis_server.url, timeout=5)
    try:
        echoed = await asyncio.gather(*(client.execute("ECHO", f"request {i}")
                                        for i in range(200)))
        assert echoed == [f"request {i}".encode() for i in range(200)]  # each its own, in order
        got = await asyncio.gather(*(client.execute("INCRBY", f"n{i % 7}", i)
                                     for i in range(200)))
        assert all(total >= i for i, total in enumerate(got))  # a running sum, never another's
        totals = await client.pipeline([("GET", f"n{j}") for j in range(7)])
        assert [int(t) for t in totals] == [sum(i for i in range(200) if i % 7 == j)
                                            for j in range(7)]
    finally:
        await client.aclose()
