"""Issue 7's etcd part through the wired agent (in-process, real etcd started by the fixture):
registration `starting` → `running`, the metrics endpoint in service discovery until shutdown,
and the global config under config/agent overriding the local file."""

from __future__ import annotations

import asyncio
import socket
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from berth.daemon.agent import Agent
from berth.config import AgentConfig, load_config
from berth.errors import ConfigError
from berth.events.etcd import EtcdConfigSource

from .conftest import RUN_LABEL, free_port, port_block


def config(root: Path, etcd_addr: str, namespace: str, **more: Any) -> AgentConfig:
    internal = f"127.0.0.1:{free_port()}"
    values: dict[str, Any] = {
        "agent.id": f"{RUN_LABEL}-{uuid.uuid4().hex[:6]}",
        "agent.rpc-allow-plain": True,
        "agent.rpc-listen-addr": "127.0.0.1:0",
        "agent.internal-addr": internal,
        "agent.announce-internal-addr": internal,
        "agent.var-base-path": str(root / "var"),
        "agent.ipc-base-path": str(root / "ipc"),
        "container.scratch-root": str(root / "scratch"),
        "container.port-range": list(port_block()),
        "container.bind-host": "127.0.0.1",
        "etcd.addr": etcd_addr,
        "etcd.namespace": namespace,
        "kernel-lifecycles.creating-timeout-sec": 120,
    }
    values.update(more)
    return load_config(env={}, overrides=values)


@pytest.fixture
async def etcd(etcd_addr: str) -> AsyncIterator[EtcdConfigSource]:
    async with EtcdConfigSource(etcd_addr, f"agtest{uuid.uuid4().hex[:6]}") as source:
        yield source


async def test_registration_discovery_and_etcd_config(
        tmp_path: Path, etcd_addr: str, etcd: EtcdConfigSource) -> None:
    await etcd.put("config/agent/kernel-lifecycles/creating-timeout-sec", "77")
    agent = Agent(config(tmp_path, etcd_addr, etcd.namespace,
                         **{"agent.skip-manager-detection": True}))
    node = f"nodes/agents/{agent.agent_id}"
    announce = agent.config.agent.announce_internal_addr
    service_id = str(uuid.uuid5(uuid.NAMESPACE_DNS, f"agent/{announce}"))
    service = f"ai/backend/service_discovery/agent/{service_id}"
    await agent.startup()
    try:
        assert agent.config.kernel_lifecycles.creating_timeout_sec == 77.0
        assert agent.parts.lifecycle.s.creating_timeout == 77.0  # what kernels get
        assert await etcd.get(node) == "running"
        assert await etcd.get(f"{node}/ip") == "127.0.0.1"
        assert await etcd.get(f"{node}/watcher_port") == "6009"
        entry = await etcd.get_prefix(service)
        assert entry["id"] == service_id and entry["service_group"] == "agent"
        assert entry["endpoint"]["prometheus_address"] == announce
        assert entry["labels"] == {"agent_id": agent.agent_id}
    finally:
        await agent.shutdown()
    assert await etcd.get_prefix(service) == {}
    # A cleanly stopped node is gone from etcd, not left reading "running".
    assert await etcd.get(node) is None and await etcd.get_prefix(node) == {}


async def test_waits_for_the_manager_unless_told_to_skip(
        tmp_path: Path, etcd_addr: str, etcd: EtcdConfigSource) -> None:
    agent = Agent(config(tmp_path, etcd_addr, etcd.namespace))
    node = f"nodes/agents/{agent.agent_id}"
    starting = asyncio.create_task(agent.startup())
    try:
        await asyncio.sleep(1.5)
        assert not starting.done()
        assert await etcd.get(node) == "starting"
        await etcd.put("nodes/manager/127.0.0.1:8080", "up")
        await asyncio.wait_for(starting, 30)
        assert await etcd.get(node) == "running"
    finally:
        if not starting.done():
            starting.cancel()
        await asyncio.gather(starting, return_exceptions=True)
        await agent.shutdown()


async def test_a_bad_value_in_etcds_config_is_a_config_error_and_registers_nothing(
        tmp_path: Path, etcd_addr: str, etcd: EtcdConfigSource) -> None:
    await etcd.put("config/redis/addr", "127.0.0.1:99999")
    agent = Agent(config(tmp_path, etcd_addr, etcd.namespace,
                         **{"agent.skip-manager-detection": True}))
    try:
        with pytest.raises(ConfigError, match=r"redis\.addr.*port out of range.*etcd"):
            await agent.startup()
    finally:
        await agent.shutdown()
    assert await etcd.get_prefix("nodes/agents") == {}


async def test_a_start_that_fails_after_registering_leaves_no_node_in_etcd(
        tmp_path: Path, etcd_addr: str, etcd: EtcdConfigSource) -> None:
    with socket.socket() as taken:  # the metrics endpoint's port: its server cannot bind
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        addr = f"127.0.0.1:{taken.getsockname()[1]}"
        agent = Agent(config(tmp_path, etcd_addr, etcd.namespace,
                             **{"agent.skip-manager-detection": True,
                                "agent.internal-addr": addr,
                                "agent.announce-internal-addr": addr}))
        try:
            with pytest.raises(Exception):  # noqa: B017, PT011 - whatever the bind raises
                await agent.startup()
        finally:
            await agent.shutdown()
    assert await etcd.get_prefix("nodes/agents") == {}  # not left "starting"
