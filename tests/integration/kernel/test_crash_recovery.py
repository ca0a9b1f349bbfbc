"""kill -9 of a real agent process, then a restart: live kernels adopted untouched, dead ones
cleaned, a create cut in the middle leaves nothing behind."""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import subprocess
import sys
import uuid
from decimal import Decimal
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from berth.client import AgentClient

from .conftest import RUN_LABEL, free_port_range, kernel_config


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class AgentProcess:
    def __init__(self, root: Path, agent_id: str) -> None:
        self.root = root
        self.agent_id = agent_id
        self.port = _free_port()
        low, high = free_port_range()
        self.config = root / "agent.toml"
        self.config.write_text(f"""
[agent]
id = "{agent_id}"
rpc-listen-addr = "127.0.0.1:{self.port}"
rpc-allow-plain = true
internal-addr = "127.0.0.1:0"
var-base-path = "var"
ipc-base-path = "ipc"
[agent.sync-container-lifecycles]
interval = 1.0
[container]
scratch-root = "scratch"
port-range = [{low}, {high}]
port-reuse-cooldown-sec = 0
bind-host = "127.0.0.1"
[resource]
reserved-cpu = 0
reserved-mem = "256m"
[logging]
file = "agent.log"
""")
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def addr(self) -> str:
        return f"tcp://127.0.0.1:{self.port}"

    async def start(self) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, "-c", "from berth.cli.main import main; main()",
             "start-server", "-f", str(self.config)],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        for _ in range(300):
            assert self.proc.poll() is None, self.log()
            try:
                async with self.client(timeout=2) as c:
                    if (await c.get_status()).get("ready"):
                        return
            except Exception:
                await asyncio.sleep(0.1)
        raise AssertionError(f"agent did not become ready:\n{self.log()}")

    def client(self, timeout: float = 60) -> AgentClient:
        return AgentClient(self.addr, timeout=timeout, handshake_timeout=2)

    def kill9(self) -> None:
        assert self.proc is not None
        os.kill(self.proc.pid, signal.SIGKILL)
        self.proc.wait()

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()

    def log(self) -> str:
        path = self.root / "agent.log"
        return path.read_text()[-4000:] if path.exists() else "(no log)"


@pytest.fixture
async def agent_proc(tmp_path: Path) -> AsyncIterator[AgentProcess]:
    proc = AgentProcess(tmp_path, f"{RUN_LABEL}-{uuid.uuid4().hex[:6]}")
    await proc.start()
    try:
        yield proc
    finally:
        if proc.proc is not None and proc.proc.poll() is None:
            async with proc.client() as c:
                await c.reset_agent()
        proc.stop()
        _remove_containers(proc.agent_id)


def _containers(agent_id: str, kernel_id: str | None = None) -> list[str]:
    labels = ["--filter", f"label=ai.backend.owner={agent_id}"]
    if kernel_id:
        labels += ["--filter", f"label=ai.backend.kernel-id={kernel_id}"]
    out = subprocess.run(["docker", "ps", "-aq", *labels], capture_output=True, text=True)
    return out.stdout.split()


def _remove_containers(agent_id: str) -> None:
    ids = _containers(agent_id)
    if ids:
        subprocess.run(["docker", "rm", "-f", *ids], capture_output=True)


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
    subprocess.run(["docker", "rm", "-f", before[gone]["container_id"]], check=True,
                   capture_output=True)
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
        if _containers(agent_proc.agent_id, kid):
            break
        await asyncio.sleep(0.05)
    assert _containers(agent_proc.agent_id, kid), "the container never appeared"
    agent_proc.kill9()
    task.cancel()  # the caller's answer never comes; a Manager would time out
    with pytest.raises(asyncio.CancelledError):
        await task
    await agent_proc.start()
    async with agent_proc.client() as c:
        status = await c.get_status()
    assert kid not in _kernels(status)
    assert not _containers(agent_proc.agent_id, kid)
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
