"""Issue 12 item 7c through the wired agent: a start that finds many dead things (stray scratch
directories, stopped containers with the agent's owner label and no ledger) leaves their removal
to a background task: the agent is ready, the task reports its progress (`get_status` bgtasks,
the `bgtask.{id}` cache on a real redis-server) and ends having removed them all."""

from __future__ import annotations

import json
import subprocess
import uuid
from pathlib import Path
from typing import Any

import pytest
import redis.asyncio as aioredis

from berth.types import OWNER_LABEL

from .conftest import (
    BUSYBOX,
    RUN_LABEL,
    AgentProcess,
    RedisServer,
    containers,
    eventually,
    port_block,
)

STRAY_DIRS = 24
STRAY_CONTAINERS = 4


async def bgtask_cache(server: RedisServer) -> dict[str, dict[str, Any]]:
    client = aioredis.Redis(host="127.0.0.1", port=server.port, db=4, decode_responses=True)
    try:
        return {k: json.loads(await client.get(k)) for k in await client.keys("bgtask.*")}
    finally:
        await client.aclose()


def stopped_container(agent_id: str) -> str:
    """A created, never started container with the agent's owner label and no ledger."""
    return subprocess.run(["docker", "create", "--label", f"{OWNER_LABEL}={agent_id}",
                           "--label", "berth.test=1", BUSYBOX, "true"], check=True,
                          capture_output=True, text=True).stdout.strip()


def remove(ids: list[str]) -> None:
    subprocess.run(["docker", "rm", "-f", *ids], check=False, capture_output=True)


@pytest.mark.timeout(120)
async def test_many_dead_things_at_start_are_a_background_task(
        redis_server: RedisServer, tmp_path: Path) -> None:
    root = tmp_path / "agent"
    root.mkdir()
    agent = AgentProcess(root, f"{RUN_LABEL}-bulk-{uuid.uuid4().hex[:6]}",
                         port_range=port_block(), extra_toml=redis_server.toml)
    agent_id = agent.agent_id
    scratch = root / "scratch"
    for _ in range(STRAY_DIRS):
        (scratch / str(uuid.uuid4()) / "work").mkdir(parents=True)
    made = [stopped_container(agent_id) for _ in range(STRAY_CONTAINERS)]
    try:
        await agent.start()
        await check(agent, scratch, redis_server)
    finally:
        await agent.shutdown()
        remove(made)


async def check(agent: AgentProcess, scratch: Path, redis_server: RedisServer) -> None:
    agent_id = agent.agent_id
    async with agent.client() as c:
        async def cleanup_done() -> bool:
            tasks = (await c.get_status())["bgtasks"].values()
            return any(t["name"] == "reconcile cleanup" and t["status"] == "done" for t in tasks)
        await eventually(cleanup_done, 30, "the reconcile cleanup task")
        (task,) = [t for t in (await c.get_status())["bgtasks"].values()
                   if t["name"] == "reconcile cleanup"]
    total = STRAY_DIRS + STRAY_CONTAINERS
    assert (task["current"], task["total"]) == (total, total), task
    assert f"{STRAY_CONTAINERS} stray containers, {STRAY_DIRS} stray scratch dirs" in task[
        "message"], task
    assert not containers(agent_id)
    assert not [p for p in scratch.iterdir() if p.is_dir()], list(scratch.iterdir())

    async def cached() -> bool:
        entry = (await bgtask_cache(redis_server)).get(f"bgtask.{task['task_id']}")
        return entry is not None and entry["name"] == "bgtask_done"
    await eventually(cached, 10, "bgtask_done in the bgtask cache")
