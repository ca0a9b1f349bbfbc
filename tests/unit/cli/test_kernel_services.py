"""`berth kernel service start|stop` through the real RPC path, in memory."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from berth.cli.kernel_services import service_lines

from .fakes import ExecAgent, calls, exec_agent, invoke


@pytest.fixture
def agent(tmp_path: Path) -> ExecAgent:
    return exec_agent(tmp_path)


# ------------------------------------------------------------------ services

def test_service_start_prints_host_ports_and_stop(agent: ExecAgent) -> None:
    res = invoke(agent, "--addr", "tcp://10.1.2.3:6011", "kernel", "service", "start", "k1",
                 "http-server")
    assert res.exit_code == 0
    assert "http-server: started" in res.stdout and "http://10.1.2.3:30123/" in res.stdout
    out = json.loads(invoke(agent, "kernel", "service", "start", "k1", "http-server",
                            "--json").stdout)
    assert out == {"status": "started", "service": "http-server", "host_ports": [30123]}
    assert invoke(agent, "kernel", "service", "stop", "k1", "http-server").exit_code == 0
    assert calls(agent, "shutdown_service") == [{"kernel_id": "k1", "service": "http-server"}]
    agent.service_status = "failed"
    res = invoke(agent, "kernel", "service", "start", "k1", "http-server")
    assert res.exit_code == 1 and "port never opened" in res.stdout


def test_service_start_passes_envs_and_arguments(agent: ExecAgent) -> None:
    res = invoke(agent, "kernel", "service", "start", "k1", "http-server",
                 "--env", "JUPYTER_TOKEN=t0k=en", "--arg", "--ServerApp.base_url=/x/")
    assert res.exit_code == 0, res.output
    assert calls(agent, "start_service")[-1]["opts"] == {
        "envs": {"JUPYTER_TOKEN": "t0k=en"}, "arguments": {"--ServerApp.base_url": "/x/"}}
    invoke(agent, "kernel", "service", "start", "k1", "http-server")
    assert calls(agent, "start_service")[-1]["opts"] == {}
    res = invoke(agent, "kernel", "service", "start", "k1", "http-server", "--env", "NOEQUALS")
    assert res.exit_code == 2 and "KEY=VALUE" in res.output


def test_service_lines_without_declaration() -> None:
    assert service_lines("x", {"status": "started"}, [], "h") == ["x: started"]
