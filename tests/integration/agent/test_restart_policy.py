"""Issue 12 item 7g through the wired agent: with `[kernel-lifecycles] restart-policy =
"on-failure"`, a kernel whose real container exits non-zero gets a new container (same kernel,
`kernel_started` with reason `restarting`), up to `restart-max`; then the kernel ends and only
then is `kernel_terminated` sent. The outcomes are counted in
`berth_kernel_auto_restarts_total`."""

from __future__ import annotations

import subprocess
import urllib.request
import uuid
from typing import Any

import pytest

from .conftest import AgentFactory, RedisServer, containers, eventually, kernel_config
from .test_redis_events_agent import StreamWatcher

POLICY = """[kernel-lifecycles]
restart-policy = "on-failure"
restart-backoff-base-sec = 0.2
restart-backoff-cap-sec = 1.0
restart-max = 2
"""


def kill(container_id: str) -> None:
    subprocess.run(["docker", "kill", container_id], check=True, capture_output=True, timeout=30)


def metric(port: int, outcome: str) -> float:
    body = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read().decode()
    for line in body.splitlines():
        if line.startswith("berth_kernel_auto_restarts_total{") and f'outcome="{outcome}"' in line:
            return float(line.rsplit(" ", 1)[1])
    return 0.0


@pytest.mark.timeout(150)
async def test_on_failure_restarts_the_container_then_gives_up(
        agent_factory: AgentFactory, redis_server: RedisServer) -> None:
    agent = await agent_factory(redis_server.toml + POLICY)
    watch = StreamWatcher(redis_server)
    kid = str(uuid.uuid4())
    async with agent.client() as c:
        created = await c.create_kernels(kid, [kid], [kernel_config()], {})
        seen = [created[0]["container_id"]]

        async def kernel() -> dict[str, Any]:
            rows = [k for k in (await c.get_status())["kernels"] if k["kernel_id"] == kid]
            return rows[0] if rows else {}

        for restart in (1, 2):
            kill(seen[-1])

            async def replaced() -> bool:
                row = await kernel()
                return row.get("state") == "RUNNING" and row.get("container_id") not in seen
            await eventually(replaced, 30, f"a new container (restart {restart})")
            seen.append((await kernel())["container_id"])
            assert await c.check_running(kid)
            assert containers(agent.agent_id, kid) == [seen[-1][:12]]  # the old one is gone

        kill(seen[-1])  # the third failure: restart-max (2) is spent

        async def ended() -> bool:
            row = await kernel()
            return not row or row.get("state") == "TERMINATED"
        await eventually(ended, 30, "the kernel's end")

    await watch.until(lambda: any(e.name == "kernel_terminated"
                                  for e in watch.kernel_events(kid)), 10, "kernel_terminated")
    life = watch.kernel_events(kid)
    names = [e.name for e in life]
    assert names == ["kernel_preparing", "kernel_creating", "kernel_started", "kernel_started",
                     "kernel_started", "kernel_terminated"], names
    restarts = [e.payload for e in life if e.name == "kernel_started"][1:]
    assert [p["reason"] for p in restarts] == ["restarting", "restarting"]
    assert [p["creation_info"]["container_id"] for p in restarts] == seen[1:]
    assert life[-1].payload["exit_code"] == 137
    assert not containers(agent.agent_id, kid)
    assert metric(agent.internal_port, "restarted") == 2
    assert metric(agent.internal_port, "gave-up") == 1
