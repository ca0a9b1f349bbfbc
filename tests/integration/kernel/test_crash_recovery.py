"""kill -9 of a real agent process, then a restart: live kernels adopted untouched, dead ones
cleaned, a create cut in the middle leaves nothing behind."""

from __future__ import annotations

import asyncio
import uuid
from decimal import Decimal
from typing import Any

import pytest
from support.docker import containers, docker
from support.procs import AgentProcess

from .conftest import kernel_config


def small(**extra: Any) -> dict[str, Any]:
    """A quarter of a core each: five fit on a two-core machine."""
    return kernel_config(resource_slots={"cpu": "0.25", "mem": "96m"}, **extra)


def _kernels(status: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {k["kernel_id"]: k for k in status["kernels"]}


async def test_kill9_with_five_kernels_adopts_four_and_cleans_the_removed_one(
        agent_proc: AgentProcess) -> None:
    kids = [str(uuid.uuid4()) for _ in range(5)]
    async with agent_proc.client() as c:
        await c.create_kernels("sess", kids, [small(preopen_ports=[8081])] * 5, {})
        before = _kernels(await c.get_status())
    assert set(before) == set(kids)
    agent_proc.kill9()
    gone = kids[4]
    await asyncio.to_thread(docker, "rm", "-f", before[gone]["container_id"])
    await agent_proc.start()
    async with agent_proc.client() as c:
        status = await c.get_status()
    after = _kernels(status)
    assert set(after) == set(kids[:4]), agent_proc.log()
    for kid in kids[:4]:
        assert after[kid]["container_id"] == before[kid]["container_id"]
        assert after[kid]["host_ports"] == before[kid]["host_ports"]
        assert after[kid]["allocation"] == before[kid]["allocation"]
        assert after[kid]["state"] == "RUNNING"
    assert Decimal(status["slots"]["used"]["cpu"]) == Decimal("1.00")
    assert not (agent_proc.root / "scratch" / gone).exists()
    # The removed kernel's host port is free again: a new kernel may take it.
    async with agent_proc.client() as c:
        newcomer = str(uuid.uuid4())
        await c.create_kernels("sess", [newcomer], [small(preopen_ports=[8081])], {})
        used = {p for k in _kernels(await c.get_status()).values()
                for ports in k["host_ports"].values() for p in ports}
    assert len(used) == 5 * 2  # 4 adopted + 1 new kernel, two ports each, no clash


async def test_kill9_in_the_middle_of_a_create_leaves_nothing(agent_proc: AgentProcess) -> None:
    kid = str(uuid.uuid4())

    async def create() -> None:
        async with agent_proc.client() as c:
            await c.create_kernels("sess", [kid], [small(bootstrap_script="sleep 30")],
                                   {})

    task = asyncio.create_task(create())
    for _ in range(200):
        if containers(agent_proc.agent_id, kid):
            break
        await asyncio.sleep(0.05)
    assert containers(agent_proc.agent_id, kid), "the container never appeared"
    agent_proc.kill9()
    task.cancel()  # the caller's answer never comes; a Manager would time out
    with pytest.raises(asyncio.CancelledError):
        await task
    await agent_proc.start()
    async with agent_proc.client() as c:
        status = await c.get_status()
    assert kid not in _kernels(status)
    assert not containers(agent_proc.agent_id, kid)
    assert not (agent_proc.root / "scratch" / kid).exists()
    assert Decimal(status["slots"]["used"]["cpu"]) == 0


async def test_runner_and_interpreter_state_survive_agent_kill9(agent_proc: AgentProcess) -> None:
    kid = str(uuid.uuid4())
    async with agent_proc.client() as c:
        await c.create_kernels("sess", [kid], [kernel_config("berth/python:3.11")], {})
        first = await c.execute("sess", kid, 2, "r1", "query", "x = 41", {}, None)
        assert first["status"] == "finished"
    agent_proc.kill9()
    await agent_proc.start()
    async with agent_proc.client() as c:
        again = await c.execute("sess", kid, 2, "r2", "query", "print(x + 1)", {}, None)
    assert again["status"] == "finished"
    assert again["console"] == [["stdout", "42\n"]] or again["console"] == [("stdout", "42\n")]


async def test_sigterm_stops_the_agent_and_leaves_kernels_running(
        agent_proc: AgentProcess) -> None:
    kid = str(uuid.uuid4())
    async with agent_proc.client() as c:
        await c.create_kernels("sess", [kid], [small()], {})
        before = _kernels(await c.get_status())[kid]
    agent_proc.stop()
    assert agent_proc.proc is not None and agent_proc.proc.returncode == 0, agent_proc.log()
    running = await asyncio.to_thread(
        docker, "inspect", "-f", "{{.State.Running}} {{.State.StartedAt}}",
        before["container_id"])
    assert running.split()[0] == "true"
    await agent_proc.start()
    async with agent_proc.client() as c:
        after = _kernels(await c.get_status())[kid]
    assert after["container_id"] == before["container_id"]
    assert after["host_ports"] == before["host_ports"]
    again = await asyncio.to_thread(
        docker, "inspect", "-f", "{{.State.Running}} {{.State.StartedAt}}",
        before["container_id"])
    assert again == running  # the same process, never restarted
