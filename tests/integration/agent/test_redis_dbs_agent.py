"""Issue 12 item 7f through the wired agent: the Manager-facing Redis roles keep Backend.AI's
fixed DB numbers by default (statistics 0, image 3, events stream = `[redis] db`), and
`[redis] override-dbs` moves a role to another DB — on a real redis-server."""

from __future__ import annotations

import redis.asyncio as aioredis

from .conftest import AgentFactory, RedisServer, eventually


async def keys(server: RedisServer, db: int) -> set[str]:
    client = aioredis.Redis(host="127.0.0.1", port=server.port, db=db, decode_responses=True)
    try:
        return set(await client.keys("*"))
    finally:
        await client.aclose()


def toml(server: RedisServer, extra: str = "") -> str:
    return (f"{server.toml}{extra}"
            "[debug]\nheartbeat-interval = 0.5\nstats-interval = 0.3\n")


async def test_roles_use_the_fixed_dbs_unless_overridden(
        agent_factory: AgentFactory, redis_server: RedisServer) -> None:
    first = await agent_factory(toml(redis_server))
    stat_key, image_key = first.agent_id, f"installed_image:{first.agent_id}"

    async def in_default_dbs() -> bool:
        return stat_key in await keys(redis_server, 0) and image_key in await keys(
            redis_server, 3)
    await eventually(in_default_dbs, 15, "node stats in DB 0 and installed images in DB 3")

    second = await agent_factory(
        toml(redis_server, "override-dbs = { statistics = 9, image = 11 }\n"))
    stat_key, image_key = second.agent_id, f"installed_image:{second.agent_id}"

    async def in_overridden_dbs() -> bool:
        return stat_key in await keys(redis_server, 9) and image_key in await keys(
            redis_server, 11)
    await eventually(in_overridden_dbs, 15, "node stats in DB 9 and installed images in DB 11")
    assert stat_key not in await keys(redis_server, 0)
    assert image_key not in await keys(redis_server, 3)
    stream_keys = await keys(redis_server, 4)  # the events stream stays on [redis] db
    assert "events" in stream_keys, stream_keys
