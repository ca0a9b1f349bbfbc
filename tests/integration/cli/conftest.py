"""A real agent process (`berth start-server`, plain RPC on a free loopback port, tmp roots)
driven by the real `berth` CLI in subprocesses; kernels destroyed and the agent stopped by
PID at the end, any container it leaves behind removed and reported."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

PYTHON_IMAGE = "berth/python:3.11"
RUN_LABEL = f"itest-cli-{uuid.uuid4().hex[:8]}"
BERTH = [sys.executable, "-c", "from berth.cli.main import main; main()"]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _port_range(width: int = 40) -> tuple[int, int]:
    base = 36000 + (os.getpid() % 100) * 50
    return base, base + width - 1


def _docker_ok() -> None:
    if subprocess.run(["docker", "info"], check=False, capture_output=True).returncode != 0:
        pytest.fail("the Docker engine does not answer: run scripts/setup.sh first")
    if subprocess.run(["docker", "image", "inspect", PYTHON_IMAGE],
                      check=False, capture_output=True).returncode != 0:
        pytest.fail(f"image {PYTHON_IMAGE} is missing: run scripts/setup.sh first")


@dataclass
class Agent:
    root: Path
    agent_id: str
    port: int
    proc: subprocess.Popen[bytes] | None = None

    @property
    def addr(self) -> str:
        return f"tcp://127.0.0.1:{self.port}"

    def cli(self, *args: str, input: str | None = None, timeout: float = 180
            ) -> subprocess.CompletedProcess[str]:
        return subprocess.run([*BERTH, "--plain", "--addr", self.addr, "--timeout", "120",
                               *args], check=False, capture_output=True, text=True,
                              input=input, timeout=timeout, cwd=self.root)

    def popen(self, *args: str) -> subprocess.Popen[str]:
        return subprocess.Popen([*BERTH, "--plain", "--addr", self.addr, *args],
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                stdin=subprocess.DEVNULL, text=True, cwd=self.root)

    def status(self) -> dict[str, Any]:
        res = self.cli("agent", "status", "--json", timeout=30)
        assert res.returncode == 0, res.stderr
        status: dict[str, Any] = json.loads(res.stdout)
        return status

    def kernel_ids(self) -> list[str]:
        return [str(k.get("kernel_id") or k.get("id")) for k in self.status()["kernels"]
                if k.get("state") != "TERMINATED"]

    def log(self) -> str:
        path = self.root / "agent.log"
        return path.read_text()[-4000:] if path.exists() else "(no log)"


def _write_config(agent: Agent) -> Path:
    low, high = _port_range()
    config = agent.root / "agent.toml"
    config.write_text(f"""
[agent]
id = "{agent.agent_id}"
rpc-listen-addr = "127.0.0.1:{agent.port}"
rpc-allow-plain = true
internal-addr = "127.0.0.1:{_free_port()}"
var-base-path = "var"
ipc-base-path = "ipc"
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
    return config


def _wait_ready(agent: Agent) -> None:
    assert agent.proc is not None
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if agent.proc.poll() is not None:
            pytest.fail(f"the agent exited with {agent.proc.returncode}:\n{agent.log()}")
        res = agent.cli("--timeout", "2", "agent", "status", "--json", timeout=30)
        if res.returncode == 0 and json.loads(res.stdout).get("ready"):
            return
        time.sleep(0.3)
    pytest.fail(f"the agent did not become ready:\n{agent.log()}")


def _stop(agent: Agent) -> None:
    if agent.proc is None or agent.proc.poll() is not None:
        return
    os.kill(agent.proc.pid, signal.SIGTERM)
    try:
        agent.proc.wait(30)
    except subprocess.TimeoutExpired:
        os.kill(agent.proc.pid, signal.SIGKILL)
        agent.proc.wait()


def _sweep(agent_id: str) -> list[str]:
    left = subprocess.run(["docker", "ps", "-aq", "--filter",
                           f"label=ai.backend.owner={agent_id}"],
                          check=False, capture_output=True, text=True).stdout.split()
    if left:
        subprocess.run(["docker", "rm", "-f", *left], check=False, capture_output=True)
    return left


@pytest.fixture(scope="module")
def agent(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Agent]:
    _docker_ok()
    a = Agent(tmp_path_factory.mktemp("cli-agent"), f"{RUN_LABEL}-{uuid.uuid4().hex[:6]}",
              _free_port())
    config = _write_config(a)
    a.proc = subprocess.Popen([*BERTH, "start-server", "-f", str(config)],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                              cwd=a.root)
    try:
        _wait_ready(a)
        yield a
        for kernel_id in a.kernel_ids():
            a.cli("kernel", "rm", kernel_id)
    finally:
        _stop(a)
        left = _sweep(a.agent_id)
    assert not left, f"kernel containers left behind: {left}"


@pytest.fixture(scope="module")
def kernel_id(agent: Agent) -> Iterator[str]:
    kid = str(uuid.uuid4())
    res = agent.cli("kernel", "create", "--image", PYTHON_IMAGE, "--mem", "512m",
                    "--kernel-id", kid, "--json")
    assert res.returncode == 0, f"{res.stderr}\n{agent.log()}"
    yield kid
    res = agent.cli("kernel", "rm", kid)
    assert res.returncode == 0, res.stderr
