"""Issue 12 item 8 (`berth image pull`): the CLI asks the agent (`check_and_pull`, as the Manager
does) instead of talking to Docker itself, so the pull is the agent's background task — the
Manager hears `image_pull_finished` on the events stream of a real redis-server and the task's
end in its `bgtask.{id}` cache —
and the CLI follows that task to its end."""

from __future__ import annotations

import asyncio
import json
import subprocess
import uuid
from pathlib import Path
from typing import Any

import pytest
import redis.asyncio as aioredis
from support.docker import docker, remove_containers
from support.procs import BERTH, AgentProcess, RedisServer, port_block

from berth.events import STREAM_KEY

from .conftest import Registry


async def stream(server: RedisServer) -> list[tuple[str, str, dict[str, Any]]]:
    client = aioredis.Redis(host="127.0.0.1", port=server.port, db=4, decode_responses=True)
    try:
        reply: Any = await client.xrange(STREAM_KEY)
    finally:
        await client.aclose()
    return [(f["name"], f["source"], json.loads(f["payload"])) for _, f in reply]


async def bgtask_cache(server: RedisServer) -> dict[str, dict[str, Any]]:
    client = aioredis.Redis(host="127.0.0.1", port=server.port, db=4, decode_responses=True)
    try:
        keys = await client.keys("bgtask.*")
        return {k: json.loads(await client.get(k)) for k in keys}
    finally:
        await client.aclose()


def cli(agent: AgentProcess, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*BERTH, "--plain", "--addr", agent.addr, "--timeout", "120", *args],
                          check=False, capture_output=True, text=True, timeout=240)


@pytest.mark.timeout(240)
async def test_image_pull_goes_through_the_agent_and_its_background_task(
        registry: Registry, tmp_path: Path) -> None:
    with RedisServer(tmp_path) as redis_server:
        root = tmp_path / "agent"
        root.mkdir()
        agent = AgentProcess(root, f"clipull-{uuid.uuid4().hex[:8]}",
                             port_range=port_block(26000),
                             extra_toml=redis_server.toml + "[debug]\nheartbeat-interval = 0.5\n")
        try:
            await agent.start()
            res = await asyncio.to_thread(cli, agent, "image", "pull", "-q", registry.image)
            assert res.returncode == 0, f"{res.stdout}{res.stderr}\n{agent.log()}"
            assert f"pulled {registry.image}" in res.stdout, res.stdout
            docker("image", "inspect", registry.image)  # on the node now

            await asyncio.sleep(1.5)  # the agent's sender flushes its backlog
            events = await stream(redis_server)
            mine = [(n, p) for n, s, p in events if s == agent.agent_id]
            finished = [p for n, p in mine if n == "image_pull_finished"]
            assert [p["image"] for p in finished] == [registry.image], mine
            # bgtask_* are broadcast (pub/sub), their last state cached under bgtask.{id}.
            cached = await bgtask_cache(redis_server)
            assert len(cached) == 1, cached
            (last,) = cached.values()
            assert last["name"] == "bgtask_done" and last["source"] == agent.agent_id, last
            assert f"pulled {registry.image}" in json.loads(last["payload"])["message"], last

            again = await asyncio.to_thread(cli, agent, "image", "pull", "-q", registry.image)
            assert again.returncode == 0 and "up to date" in again.stdout, again.stdout
        finally:
            await agent.shutdown()
            remove_containers(agent.agent_id)
            docker("rmi", "-f", registry.image, check=False)
