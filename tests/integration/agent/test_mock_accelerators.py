"""Issue 5 through the wired agent: a real agent process with the mock accelerator plugin gives
each kernel exactly its devices, refuses what does not fit with the typed error over RPC, and
keeps every allocation across a kill -9 and restart."""

from __future__ import annotations

import uuid
from typing import Any

import pytest

from berth.errors import InsufficientResource

from .conftest import AgentFactory, AgentProcess, container_env, containers, kernel_config

MODEL = "Berth Agent-Test Accelerator"
AGENT = 'allow-compute-plugins = ["cpu", "mem", "mock"]'
MOCK = f"""
[plugins.mock]
count = 4
memory = "4g"
processing_units = 16
model = "{MODEL}"
"""
ALL_DEVICES = {"mock0", "mock1", "mock2", "mock3"}


def two_devices() -> dict[str, Any]:
    config: dict[str, Any] = kernel_config(**{"mock.device": "2"})
    return config


def kernels(status: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {k["kernel_id"]: k for k in status["kernels"]}


def visible_devices(container_id: str) -> set[str]:
    env = container_env(container_id)
    devices = set(env["MOCK_VISIBLE_DEVICES"].split(","))
    shares = dict(pair.split(":") for pair in env["BERTH_MOCK_DEVICES"].split(","))
    assert set(shares) == devices and all(v == "1" for v in shares.values()), env
    return devices


async def refused(agent: AgentProcess) -> InsufficientResource:
    kid = str(uuid.uuid4())
    async with agent.client() as c:
        with pytest.raises(InsufficientResource) as info:
            await c.create_kernels(kid, [kid], [two_devices()], {})
    assert not containers(agent.agent_id, kid)
    return info.value


@pytest.mark.timeout(240)
async def test_mock_devices_are_exclusive_refused_when_full_and_survive_kill9(
        agent_factory: AgentFactory) -> None:
    agent = await agent_factory(MOCK, agent_toml=AGENT)
    kids = [str(uuid.uuid4()) for _ in range(2)]
    async with agent.client() as c:
        for kid in kids:
            await c.create_kernels(kid, [kid], [two_devices()], {})
        before = kernels(await c.get_status())
        alloc_map = await c.scan_gpu_alloc_map()
    seen = {kid: visible_devices(before[kid]["container_id"]) for kid in kids}
    assert all(len(devs) == 2 for devs in seen.values()), seen
    assert seen[kids[0]].isdisjoint(seen[kids[1]]) and seen[kids[0]] | seen[kids[1]] == ALL_DEVICES
    assert alloc_map == {dev: "1" for dev in ALL_DEVICES}

    error = await refused(agent)
    assert error.slot == "mock.device"
    assert str(error.requested) == "2" and str(error.available) == "0"

    agent.kill9()
    await agent.start()
    async with agent.client() as c:
        status = await c.get_status()
        after = kernels(status)
        assert await c.scan_gpu_alloc_map() == alloc_map
    assert set(after) == set(kids), agent.log()
    for kid in kids:
        assert after[kid]["state"] == "RUNNING"
        assert after[kid]["container_id"] == before[kid]["container_id"]
        assert after[kid]["allocation"] == before[kid]["allocation"]
        assert visible_devices(after[kid]["container_id"]) == seen[kid]
    assert status["slots"]["used"]["mock.device"] in ("4", "4.00")
    assert (await refused(agent)).slot == "mock.device"

    newcomer = str(uuid.uuid4())
    async with agent.client() as c:
        await c.destroy_kernel(kids[0], kids[0])
        await c.create_kernels(newcomer, [newcomer], [two_devices()], {})
        now = kernels(await c.get_status())
    assert visible_devices(now[newcomer]["container_id"]) == seen[kids[0]]


async def test_hwinfo_and_heartbeat_slots_report_the_mock_plugin(
        agent_factory: AgentFactory) -> None:
    agent = await agent_factory(MOCK, agent_toml=AGENT)
    async with agent.client() as c:
        hwinfo = await c.gather_hwinfo()
        status = await c.get_status()
        assert await c.scan_gpu_alloc_map() == {}
    mock = hwinfo["mock"]
    assert mock["status"] == "healthy"
    assert mock["metadata"] == {"devices": "4", "model": MODEL}
    assert {"cpu", "mem"} <= set(hwinfo)
    assert status["slots"]["total"]["mock.device"] in ("4", "4.00")
    assert status["slots"]["available"]["mock.device"] in ("4", "4.00")
