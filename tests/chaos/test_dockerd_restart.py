"""The engine restarts under a running agent: a private dockerd (its own socket, data and exec
roots, bridge; no live-restore) is stopped by PID with kernels running and creates in flight,
then started again.

The agent survives and answers throughout; creates during the outage fail with a typed error and
leak nothing; the kernels the engine stopped are TERMINATED with kernel_terminated events; once
the engine answers, creates succeed again and the Docker event watcher is subscribed again (the
periodic sync is off here, so only the watcher can see a container die); the leak audit is clean.
"""

from __future__ import annotations

import asyncio
import os
import signal
import time
import urllib.error
import urllib.request
from typing import Any

import pytest
from support.dockerd import PrivateDockerd
from support.leaks import assert_no_leaks, fd_count
from support.procs import LOOPBACK, RedisServer

from berth.errors import BerthError

from .conftest import (
    AgentFactory,
    EventStream,
    eventually,
    kernel_config,
    live_kernels,
    new_id,
    warm_up,
)


def _ready(port: int) -> bool:
    try:
        with urllib.request.urlopen(f"http://{LOOPBACK}:{port}/readyz", timeout=5) as reply:
            return bool(reply.status == 200)
    except urllib.error.HTTPError:
        return False


async def _create(agent: Any, kids: list[str]) -> list[dict[str, Any]] | BaseException:
    try:
        async with agent.client(timeout=120) as c:
            return await c.create_kernels(f"sess-{kids[0]}", kids,
                                          [kernel_config()] * len(kids), {})
    except BerthError as exc:
        return exc


@pytest.mark.timeout(300)
async def test_dockerd_restart_under_running_kernels_and_creates_in_flight(
        agent_factory: AgentFactory, engine: PrivateDockerd, redis_server: RedisServer) -> None:
    agent = await agent_factory(
        container_toml=f'docker-host = "{engine.host}"\nstop-grace-sec = 2',
        extra_toml=redis_server.toml + "[kernel-lifecycles]\ncreating-timeout-sec = 60\n",
        sync_interval=3600.0)  # the periodic sync stays out of the way: the watcher must act
    stream = EventStream(redis_server)
    await warm_up(agent)
    baseline = fd_count(agent.proc.pid)  # type: ignore[union-attr]

    running = [new_id() for _ in range(3)]
    assert not isinstance(created := await _create(agent, running), BaseException), created
    before = await live_kernels(agent)
    assert set(before) == set(running)

    in_flight = [asyncio.ensure_future(_create(agent, [new_id()])) for _ in range(3)]
    await asyncio.sleep(0.3)
    await asyncio.to_thread(engine.stop)  # SIGTERM by PID: it stops every container

    # The engine is down: the agent answers, is not ready, and a create fails typed.
    assert not engine.answers()
    async with agent.client(timeout=30) as c:
        assert (await c.get_status())["agent_id"] == agent.agent_id
        with pytest.raises(BerthError):
            await asyncio.wait_for(
                c.create_kernels("sess-down", [down := new_id()], [kernel_config()], {}), 60)
    assert not await asyncio.to_thread(_ready, agent.internal_port)
    outcomes = await asyncio.wait_for(asyncio.gather(*in_flight), 90)
    for outcome in outcomes:  # done before the stop, or failed typed
        assert isinstance(outcome, (list, BerthError)), outcome

    await asyncio.to_thread(engine.start)
    assert agent.alive, agent.log()

    async def lost_ones_ended() -> bool:
        return not set(running) & set(await live_kernels(agent))
    await eventually(lost_ones_ended, timeout=60, what="kernels the engine stopped ended",
                     log=agent.log)
    await eventually(lambda: asyncio.to_thread(_ready, agent.internal_port), timeout=30,
                     what="the agent ready again", log=agent.log)

    async def terminated_events() -> bool:
        await stream.poll()
        return all(stream.of(kid, "kernel_terminated") for kid in running)
    await eventually(terminated_events, timeout=30, what="kernel_terminated of each lost kernel",
                     log=agent.log)
    for kid in running:
        payload = stream.of(kid, "kernel_terminated")[-1].payload
        assert payload["reason"] == "self-terminated", payload  # its container was stopped
        assert payload["exit_code"] != -1, payload
    assert not stream.of(down, "kernel_started")

    # Creates succeed again; the watcher is subscribed again (no periodic sync here).
    fresh = [new_id()]
    assert not isinstance(created := await _create(agent, fresh), BaseException), created
    cid = (await live_kernels(agent))[fresh[0]]["container_id"]
    await asyncio.to_thread(engine.docker, "kill", cid)

    async def death_seen() -> bool:
        return fresh[0] not in await live_kernels(agent)
    await eventually(death_seen, timeout=15, what="a container death seen through the "
                     "resubscribed Docker events", log=agent.log)

    await assert_no_leaks(agent, docker_host=engine.host, fd_baseline=baseline)


@pytest.mark.timeout(240)
async def test_a_frozen_engine_holds_no_client(agent_factory: AgentFactory,
                                               engine: PrivateDockerd) -> None:
    """dockerd stopped with SIGSTOP (it accepts connections and never answers): a create and a
    destroy answer within their deadlines, typed; after SIGCONT the sync removes what the
    frozen engine kept, and the audit is clean."""
    agent = await agent_factory(
        container_toml=f'docker-host = "{engine.host}"\nstop-grace-sec = 1',
        extra_toml="[kernel-lifecycles]\npreparing-timeout-sec = 3\ncreating-timeout-sec = 5\n"
                   "terminating-timeout-sec = 3\n")
    await warm_up(agent)
    baseline = fd_count(agent.proc.pid)  # type: ignore[union-attr]
    running = [new_id()]
    assert not isinstance(created := await _create(agent, running), BaseException), created

    os.kill(engine.pid, signal.SIGSTOP)
    try:
        started = time.monotonic()
        outcome = await asyncio.wait_for(_create(agent, [new_id()]), 30)
        assert isinstance(outcome, BerthError), outcome
        async with agent.client(timeout=30) as c:
            await asyncio.wait_for(c.destroy_kernel(running[0], f"sess-{running[0]}"), 30)
        assert time.monotonic() - started < 30
        assert running[0] not in await live_kernels(agent)
    finally:
        os.kill(engine.pid, signal.SIGCONT)
    await assert_no_leaks(agent, docker_host=engine.host, fd_baseline=baseline, settle=30)
