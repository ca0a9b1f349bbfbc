"""Issue 11 (finding 4) through a real ``berth start-server`` agent and real Docker kernels:
a body over the agent's ``rpc-max-body-size`` gets a typed ``RequestTooLarge`` reply at once and
the agent serves on; an agent killed (SIGKILL, by PID) while an ``execute`` is in flight fails
that call with ``AgentUnreachable`` within seconds, not at the client's 60 s timeout, and the
same client works again once the agent is back and has adopted its kernel.

Every wait is bounded by ``asyncio.wait_for`` so that a hang (the old behaviour: no reply to an
oversized body, no liveness in the client) fails the test instead of stalling the suite.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from typing import Any

import pytest

from berth.client import AgentClient
from berth.errors import AgentUnreachable, RequestTooLarge

from .conftest import PYTHON, AgentFactory, containers, kernel_config

LIMIT = 2**20  # the agent's rpc-max-body-size here: 1 MiB
SMALL_BODY = f"rpc-max-body-size = {LIMIT}"


async def kernel_state(c: AgentClient, kid: str) -> dict[str, Any]:
    [kernel] = [k for k in (await c.get_status())["kernels"] if k["kernel_id"] == kid]
    return dict(kernel)


@pytest.mark.timeout(180)
async def test_body_over_the_agents_limit_gets_request_too_large_and_the_agent_serves_on(
        agent_factory: AgentFactory) -> None:
    agent = await agent_factory(agent_toml=SMALL_BODY)
    kid = str(uuid.uuid4())
    async with agent.client(timeout=60) as c:
        await c.create_kernels(kid, [kid], [kernel_config()], {})
        t0 = time.monotonic()
        with pytest.raises(RequestTooLarge) as err:
            await asyncio.wait_for(c.upload_file(kid, "big.bin", b"\0" * (2 * LIMIT)), 20)
        assert time.monotonic() - t0 < 3
        assert err.value.data["limit"] == LIMIT and err.value.data["size"] > LIMIT
        assert agent.alive, agent.log()
        # the agent serves on, on the same connection: the next calls are answered
        assert await asyncio.wait_for(c.ping("after"), 20) == "after"
        assert await asyncio.wait_for(c.check_running(kid), 20) is True
        # a body under the limit still reaches the kernel
        await asyncio.wait_for(c.upload_file(kid, "small.bin", b"\1" * (LIMIT // 2)), 30)
        files = await asyncio.wait_for(c.list_files(kid, "."), 30)
        assert "small.bin" in str(files) and "big.bin" not in str(files), files
        await c.destroy_kernel(kid, kid)
    assert not containers(agent.agent_id, kid)


@pytest.mark.timeout(300)
async def test_agent_killed_mid_execute_fails_the_call_fast_and_the_client_recovers(
        agent_factory: AgentFactory) -> None:
    agent = await agent_factory()
    kid = str(uuid.uuid4())
    async with agent.client(timeout=60) as c:
        await c.create_kernels(kid, [kid], [kernel_config(PYTHON)], {})
        before = await kernel_state(c, kid)
        call = asyncio.create_task(c.execute_code(kid, "import time; time.sleep(30)"))
        await asyncio.sleep(2)  # the execute reaches the kernel's runner
        assert not call.done(), call.result()

        t0 = time.monotonic()
        agent.kill9()  # SIGKILL by PID; the kernel's container keeps running
        with pytest.raises(AgentUnreachable):
            await asyncio.wait_for(call, 30)  # 30 < the client's 60 s: a hang fails here
        assert time.monotonic() - t0 < 10

        with pytest.raises(AgentUnreachable):  # while down a new call fails, it is not queued
            await asyncio.wait_for(c.ping("down"), 30)

        await agent.start()  # same config, port and keys; it adopts the running kernel
        assert await asyncio.wait_for(c.ping("back"), 30) == "back"
        assert await asyncio.wait_for(c.check_running(kid), 30) is True
        after = await kernel_state(c, kid)
        assert after["container_id"] == before["container_id"], agent.log()
        assert after["state"] == "RUNNING"
        await c.destroy_kernel(kid, kid)
    assert not containers(agent.agent_id, kid)
