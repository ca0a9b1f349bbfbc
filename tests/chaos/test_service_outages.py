"""Redis and etcd outages under a working node: the test's own redis-server or etcd is killed by
PID while kernels run and a create/destroy burst goes on, then started again on the same port.

The agent answers throughout, every create and destroy of the burst succeeds (neither service is
on the kernel path), the node reconnects when the service returns (Redis: the kernel events held
back during the outage arrive; etcd: a clean stop deregisters the node), and the leak audit is
clean.
"""

from __future__ import annotations

import asyncio
import uuid
from pathlib import Path

import pytest
from support.leaks import assert_no_leaks, fd_count
from support.procs import AgentProcess, EtcdServer, RedisServer

from berth.events.etcd import EtcdConfigSource

from .conftest import AgentFactory, EventStream, eventually, kernel_config, new_id, warm_up


async def _burst(agent: AgentProcess, doomed: list[str]) -> list[str]:
    """Three creates side by side and the destroy of ``doomed``; all must succeed."""
    kids = [new_id() for _ in range(3)]

    async def create(kid: str) -> None:
        async with agent.client(timeout=120) as c:
            await c.create_kernels(f"s-{kid}", [kid], [kernel_config()], {})

    async def destroy(kid: str) -> None:
        async with agent.client(timeout=120) as c:
            await c.destroy_kernel(kid, f"s-{kid}")

    await asyncio.wait_for(asyncio.gather(*(create(k) for k in kids),
                                          *(destroy(k) for k in doomed)), 180)
    return kids


async def _create(agent: AgentProcess, count: int) -> list[str]:
    kids = [new_id() for _ in range(count)]
    async with agent.client(timeout=120) as c:
        await c.create_kernels(f"s-{kids[0]}", kids, [kernel_config()] * count, {})
    return kids


@pytest.mark.timeout(240)
async def test_redis_outage_during_a_burst(agent_factory: AgentFactory,
                                           redis_server: RedisServer) -> None:
    agent = await agent_factory(extra_toml=redis_server.toml + "[debug]\nheartbeat-interval = 1\n")
    stream = EventStream(redis_server)
    await warm_up(agent)
    baseline = fd_count(agent.proc.pid)  # type: ignore[union-attr]
    before = await _create(agent, 2)

    redis_server.kill()
    made = await _burst(agent, before[:1])
    assert agent.alive, agent.log()
    redis_server.start()  # same port; an empty stream

    async def delivered() -> bool:
        await stream.poll()
        return (all(stream.of(k, "kernel_started") for k in made)
                and bool(stream.of(before[0], "kernel_terminated")))
    await eventually(delivered, timeout=60, what="the events held back during the outage",
                     log=agent.log)
    audit = await assert_no_leaks(agent, fd_baseline=baseline)
    assert set(audit.kernels) == {before[1], *made}
    async with agent.client(timeout=120) as c:
        await c.reset_agent()
    await assert_no_leaks(agent, fd_baseline=baseline)


@pytest.mark.timeout(240)
async def test_etcd_outage_during_a_burst(agent_factory: AgentFactory, tmp_path: Path) -> None:
    namespace = f"chaos{uuid.uuid4().hex[:6]}"
    with EtcdServer(tmp_path / "etcd", member="berth-chaos") as etcd:
        agent = await agent_factory(
            agent_toml="skip-manager-detection = true",
            extra_toml=f'[etcd]\naddr = "{etcd.addr}"\nnamespace = "{namespace}"\n')
        node = f"nodes/agents/{agent.agent_id}"
        async with EtcdConfigSource(etcd.addr, namespace) as source:
            assert await source.get(node) == "running"
        await warm_up(agent)
        baseline = fd_count(agent.proc.pid)  # type: ignore[union-attr]
        before = await _create(agent, 2)

        etcd.stop()  # SIGKILL by PID
        made = await _burst(agent, before[:1])
        assert agent.alive, agent.log()
        etcd.start()  # same data dir and port

        audit = await assert_no_leaks(agent, fd_baseline=baseline)
        assert set(audit.kernels) == {before[1], *made}
        async with agent.client(timeout=120) as c:
            await c.reset_agent()
        await assert_no_leaks(agent, fd_baseline=baseline)

        agent.stop()  # a clean stop deregisters through the reconnected etcd client
        assert agent.proc is not None and agent.proc.returncode == 0, agent.log()

        async def deregistered() -> bool:
            async with EtcdConfigSource(etcd.addr, namespace) as source:
                return await source.get(node) is None
        await eventually(deregistered, timeout=10, what="the node deregistered from etcd",
                         log=agent.log)
