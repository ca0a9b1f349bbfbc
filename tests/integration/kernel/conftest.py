"""Real-Docker fixtures for the kernel lifecycle: agents in tmp roots, swept after the run."""

from __future__ import annotations

import asyncio
import subprocess
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest
from support.docker import docker_session, remove_containers
from support.net import http_get
from support.procs import AgentProcess, port_block

from berth.daemon.agent import Agent
from berth.config import AgentConfig, load_config
from berth.daemon.facade import AgentFacade

RUN_LABEL = f"itest-{uuid.uuid4().hex[:8]}"
BUSYBOX = "berth/busybox:latest"
PYTHON = "berth/python:3.11"

# what this tier's test modules import from here
__all__ = ["PYTHON", "RUN_LABEL", "agent_config", "assert_clean", "create", "eventually",
           "exec_in", "free_port_range", "http_get", "kernel_config"]


def free_port_range(width: int = 40) -> list[int]:
    """A block of ports nobody listens on, away from other agents' default range."""
    return list(port_block(21000, width))


def agent_config(root: Path, agent_id: str, **overrides: Any) -> AgentConfig:
    values: dict[str, Any] = {
        "agent.id": agent_id,
        "agent.rpc-allow-plain": True,
        "agent.rpc-listen-addr": "127.0.0.1:0",
        "agent.internal-addr": "127.0.0.1:0",
        "agent.var-base-path": str(root / "var"),
        "agent.ipc-base-path": str(root / "ipc"),
        "agent.image-commit-path": str(root / "commit"),
        "container.scratch-root": str(root / "scratch"),
        "container.port-range": free_port_range(),
        "container.port-reuse-cooldown-sec": 0,
        "container.bind-host": "127.0.0.1",
        "container.vfolder-allowed-roots": [str(root / "vfolders")],
        "resource.reserved-cpu": 0,
        "resource.reserved-mem": "256m",
        "agent.sync-container-lifecycles": {"enabled": True, "interval": 1.0},
    }
    values.update(overrides)
    (root / "vfolders").mkdir(parents=True, exist_ok=True)
    return load_config(env={}, overrides=values)


@pytest.fixture(scope="session", autouse=True)
def _sweep() -> Iterator[None]:
    yield from docker_session(RUN_LABEL, BUSYBOX, PYTHON)


@pytest.fixture
def agent_id() -> str:
    return f"{RUN_LABEL}-{uuid.uuid4().hex[:6]}"


@pytest.fixture
async def agent(tmp_path: Path, agent_id: str) -> AsyncIterator[Agent]:
    a = Agent(agent_config(tmp_path, agent_id))
    await a.startup()
    try:
        yield a
    finally:
        facade = AgentFacade.of(a)
        await facade.reset_agent()
        await a.shutdown()
        assert_clean(tmp_path / "scratch")


@pytest.fixture
def facade(agent: Agent) -> AgentFacade:
    return AgentFacade.of(agent)


def assert_clean(scratch_root: Path) -> None:
    left = [p.name for p in scratch_root.iterdir()] if scratch_root.exists() else []
    assert not left, f"scratch left behind: {left}"
    mounts = Path("/proc/self/mounts").read_text()
    assert str(scratch_root) not in mounts, "a scratch mount was left behind"
    loops = subprocess.run(["losetup", "-a"], check=False, capture_output=True,
                           text=True).stdout
    assert str(scratch_root) not in loops, "a loop device was left behind"


async def create(facade: AgentFacade, config: dict[str, Any], kernel_id: str) -> dict[str, Any]:
    return await facade.create_kernel(kernel_id, kernel_id, config)


def kernel_config(image: str = BUSYBOX, **extra: Any) -> dict[str, Any]:
    config: dict[str, Any] = {
        "image": {"canonical": image, "is_local": True},
        "resource_slots": {"cpu": "1", "mem": "256m"},
    }
    config.update(extra)
    return config


async def exec_in(agent: Agent, kernel_id: str, *cmd: str) -> tuple[int, str]:
    kernel = agent.registry.get(kernel_id)
    assert kernel.container_id
    res = await agent.backend.exec(kernel.container_id, list(cmd))
    return res.exit_code, (res.stdout + res.stderr).decode()


async def eventually(check: Any, timeout: float = 10.0) -> None:
    deadline = asyncio.get_running_loop().time() + timeout
    while True:
        if await check():
            return
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError("condition not met in time")
        await asyncio.sleep(0.1)


@pytest.fixture
async def agent_proc(tmp_path: Path) -> AsyncIterator[AgentProcess]:
    """A real ``berth start-server`` on free ports, stopped and swept afterwards."""
    low, high = free_port_range()
    proc = AgentProcess(tmp_path, f"{RUN_LABEL}-{uuid.uuid4().hex[:6]}",
                        port_range=(low, high), internal_port=0)
    try:
        await proc.start()
        yield proc
    finally:
        try:
            await proc.shutdown()
        finally:
            remove_containers(proc.agent_id)
