"""The whole agent against real services: a real agent process (or an in-process one) in a tmp
root, and redis-server / etcd / prometheus started here on free loopback ports, killed by PID.

Nothing skips: a missing binary, image or dockerd fails with a clear message.
"""

from __future__ import annotations

import asyncio
import subprocess
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from contextlib import AsyncExitStack
from pathlib import Path
from typing import Any

import pytest
from support.docker import containers, docker_session, remove_containers
from support.procs import AgentProcess, EtcdServer, RedisServer, free_port, prometheus_servers
from support.procs import port_block as shared_port_block

# what this tier's test modules import from here
__all__ = ["RUN_LABEL", "AgentFactory", "AgentProcess", "RedisServer", "container_env",
           "containers", "eventually", "free_port", "kernel_config", "port_block"]

RUN_LABEL = f"agtest-{uuid.uuid4().hex[:8]}"
BUSYBOX = "berth/busybox:latest"
PYTHON = "berth/python:3.11"


def port_block(width: int = 40) -> tuple[int, int]:
    """Host ports for kernels, away from the other tiers' blocks and the 30000-31000 default."""
    return shared_port_block(25000, width)


@pytest.fixture(scope="session", autouse=True)
def _docker_and_sweep() -> Iterator[None]:
    yield from docker_session(RUN_LABEL, BUSYBOX, PYTHON)


AgentFactory = Callable[..., Awaitable[AgentProcess]]


@pytest.fixture
async def agent_factory(tmp_path: Path) -> AsyncIterator[AgentFactory]:
    """Start agent processes (``extra_toml``, then AgentProcess's keywords); each is reset
    (kernels destroyed), stopped and its containers removed after."""
    made: list[AgentProcess] = []
    async with AsyncExitStack() as cleanup:

        async def start(extra_toml: str = "", **kw: Any) -> AgentProcess:
            root = tmp_path / f"agent{len(made)}"
            root.mkdir()
            proc = AgentProcess(root, f"{RUN_LABEL}-{uuid.uuid4().hex[:6]}",
                                port_range=port_block(), extra_toml=extra_toml, **kw)
            made.append(proc)
            cleanup.callback(remove_containers, proc.agent_id)
            cleanup.push_async_callback(proc.shutdown)
            await proc.start()
            return proc

        yield start


@pytest.fixture
def redis_server(tmp_path: Path) -> Iterator[RedisServer]:
    """redis-server on a fixed free port; ``kill()`` and ``start()`` again for outages."""
    with RedisServer(tmp_path) as server:
        yield server


@pytest.fixture
def etcd_addr(tmp_path: Path) -> Iterator[str]:
    with EtcdServer(tmp_path, member="berth-agtest") as etcd:
        yield etcd.addr


@pytest.fixture
def prometheus(tmp_path: Path) -> Iterator[Callable[[int], str]]:
    """``start(target_port)`` → base URL of a Prometheus scraping 127.0.0.1:target every 1 s."""
    yield from prometheus_servers(tmp_path)


# ───────────────────────────────────────────────────────────────── helpers


def kernel_config(image: str = BUSYBOX, **slots: str) -> dict[str, Any]:
    return {"image": {"canonical": image, "is_local": True},
            "resource_slots": {"cpu": "0.25", "mem": "96m", **slots}}


def docker_exec(container_id: str, *cmd: str) -> str:
    proc = subprocess.run(["docker", "exec", container_id, *cmd], check=False, capture_output=True,
                          text=True, timeout=30)
    assert proc.returncode == 0, proc.stderr
    return proc.stdout


def container_env(container_id: str) -> dict[str, str]:
    out = docker_exec(container_id, "busybox", "env")
    return dict(line.split("=", 1) for line in out.splitlines() if "=" in line)


async def eventually(check: Callable[[], Awaitable[bool]], timeout: float = 10.0,
                     what: str = "condition") -> None:
    deadline = time.monotonic() + timeout
    while not await check():
        if time.monotonic() > deadline:
            raise AssertionError(f"{what} not met within {timeout}s")
        await asyncio.sleep(0.2)
