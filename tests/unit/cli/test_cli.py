from __future__ import annotations

import json
import sys
import types
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner
from support.served import ServedClient

from berth.cli import CliState, cli
from berth.cli.spec import parse_mount, parse_size
from berth.errors import ConfigError, InvalidArgument
from berth.rpc.fake import FakeAgent


@pytest.fixture
def agent() -> FakeAgent:
    return FakeAgent()


def invoke(agent: FakeAgent, *args: str, refuse: bool = False) -> Any:
    state = CliState(client_factory=lambda _s: ServedClient(agent, refuse=refuse, handshake_timeout=0.2))
    return CliRunner().invoke(cli, list(args), obj=state, catch_exceptions=False)


def test_kernel_lifecycle_through_the_cli(agent: FakeAgent, tmp_path: Path) -> None:
    res = invoke(agent, "kernel", "create", "--image", "berth/python:3.11", "--cpu", "2",
                 "--mem", "512m", "--shmem", "64m", "--mount", f"{tmp_path}:data:ro",
                 "--env", "A=1", "--port", "8080", "--kernel-id", "k1", "--json")
    assert res.exit_code == 0, res.output
    _, call = next(c for c in agent.calls if c[0] == "create_kernels")
    cfg = call["configs"][0]
    assert call["kernel_ids"] == ["k1"] and cfg["image"]["canonical"] == "berth/python:3.11"
    assert cfg["resource_slots"] == {"cpu": "2", "mem": str(512 * 2**20)}
    assert cfg["resource_opts"] == {"shmem": 64 * 2**20} and cfg["environ"] == {"A": "1"}
    assert cfg["mounts"][0]["kernel_path"] == "/home/work/data" and cfg["preopen_ports"] == [8080]
    assert json.loads(res.output)[0]["id"] == "k1"

    ls = invoke(agent, "--json", "kernel", "ls")
    assert [k["id"] for k in json.loads(ls.output)] == ["k1"]
    table = invoke(agent, "kernel", "ls")
    assert "k1" in table.output and "RUNNING" in table.output
    assert invoke(agent, "kernel", "restart", "k1").exit_code == 0
    assert agent.kernels["k1"]["restarts"] == 1
    assert "logs of k1" in invoke(agent, "kernel", "logs", "k1").output
    assert invoke(agent, "kernel", "rm", "k1").exit_code == 0
    assert agent.kernels == {}


def test_exit_codes(agent: FakeAgent) -> None:
    assert invoke(agent, "kernel", "show", "nope").exit_code == 3
    assert invoke(agent, "kernel", "rm", "nope").exit_code == 3
    assert invoke(agent, "agent", "status", refuse=True).exit_code == 4
    assert invoke(agent, "kernel", "create", "--image", "i", "--mount", "bad").exit_code == 2
    assert invoke(agent, "kernel", "create").exit_code == 2  # missing --image


def test_agent_status_and_hwinfo(agent: FakeAgent) -> None:
    assert "fake-agent" in invoke(agent, "agent", "status").output
    hw = invoke(agent, "agent", "hwinfo", "--json")
    assert json.loads(hw.output)["cpu"]["status"] == "healthy"


def test_curve_keys_are_required_without_plain() -> None:
    res = CliRunner().invoke(cli, ["agent", "status"])
    assert res.exit_code == 2 and "--plain" in res.output


def test_keys_generate(tmp_path: Path) -> None:
    res = CliRunner().invoke(cli, ["keys", "generate", "--dir", str(tmp_path / "k")])
    assert res.exit_code == 0
    assert (tmp_path / "k/agent.key").read_text().count("public-key") == 1
    assert "secret-key" in (tmp_path / "k/agent.key_secret").read_text()


def test_config_check(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    fake = types.ModuleType("berth.config")

    def load_config(path: Path) -> None:
        if "bad" in path.read_text():
            raise ConfigError("must be host:port", key_path="agent.rpc-listen-addr")

    fake.load_config = load_config  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "berth.config", fake)
    good, bad = tmp_path / "good.toml", tmp_path / "bad.toml"
    good.write_text("ok")
    bad.write_text("bad")
    assert CliRunner().invoke(cli, ["config", "check", "-f", str(good)]).output == "OK\n"
    res = CliRunner().invoke(cli, ["config", "check", "-f", str(bad)])
    assert res.exit_code == 2 and "agent.rpc-listen-addr" in res.output


@pytest.mark.parametrize("cmd", [[], ["kernel"], ["kernel", "create"], ["agent", "status"],
                                 ["keys", "generate"], ["config", "check"], ["start-server"]])
def test_help_everywhere(cmd: list[str]) -> None:
    assert CliRunner().invoke(cli, [*cmd, "--help"]).exit_code == 0


def test_spec_parsers() -> None:
    assert parse_size("1g") == 2**30 and parse_size("1GiB") == 2**30 and parse_size("10") == 10
    assert parse_mount("/a:b:rw")["mount_perm"] == "rw"
    for bad in ("/a:b", "/a:b:xx", "::ro"):
        with pytest.raises(InvalidArgument):
            parse_mount(bad)
    with pytest.raises(InvalidArgument):
        parse_size("lots")
