"""A real agent process (`berth start-server`, plain RPC on a free loopback port, tmp roots)
driven by the real `berth` CLI in subprocesses; kernels destroyed and the agent stopped by
PID at the end, any container it leaves behind removed and reported."""

from __future__ import annotations

import json
import subprocess
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
from support.docker import remove_containers, require_docker_and_images
from support.procs import BERTH, AgentProcess, port_block, wait_until

PYTHON_IMAGE = "berth/python:3.11"
RUN_LABEL = f"itest-cli-{uuid.uuid4().hex[:8]}"


class Agent(AgentProcess):
    """The agent process plus the `berth` CLI pointed at it (run in its root)."""

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

    def ready(self) -> bool:
        """What the CLI says: ``agent status --json`` answers and reports ready."""
        res = self.cli("--timeout", "2", "agent", "status", "--json", timeout=30)
        return res.returncode == 0 and bool(json.loads(res.stdout).get("ready"))


@pytest.fixture(scope="module")
def agent(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Agent]:
    require_docker_and_images(PYTHON_IMAGE)
    a = Agent(tmp_path_factory.mktemp("cli-agent"), f"{RUN_LABEL}-{uuid.uuid4().hex[:6]}",
              port_range=port_block(22000), sync_interval=None)
    a.spawn()
    try:
        wait_until(a.ready, what="the agent", timeout=60, proc=a.proc, log=a.log, interval=0.3)
        yield a
        for kernel_id in a.kernel_ids():
            a.cli("kernel", "rm", kernel_id)
    finally:
        a.stop()
        left = remove_containers(a.agent_id)
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
