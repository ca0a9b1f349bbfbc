"""Every human screen of the CLI, rendered at 80 and 160 columns from answers a real agent
gave (`agent_answers.json`: `get_status` of a node with one running kernel, plus a second,
terminated kernel with GPUs, three services and a TLS port, and an image pull in progress).

Each screen is checked for what an operator trips over: a line wider than the terminal, a
raw epoch or byte count, `key=value` walls, the same concept twice, numbers without units.
`--json` stays the agent's answer, untouched. Run with `-s` and `BERTH_SHOW_SCREENS=1` to
print every screen and look at it.
"""

from __future__ import annotations

import copy
import json
import os
import re
import time
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner, Result
from support.served import ServedClient

import berth.cli.image as image_cli
from berth.backend.base import ImageInfo
from berth.cli import CliState, cli, render
from berth.cli.events import event_line
from berth.events import StreamEntry
from berth.rpc.fake import FakeAgent

from .fakes import exec_agent

ANSWERS = json.loads((Path(__file__).parent / "agent_answers.json").read_text())
STATUS: dict[str, Any] = ANSWERS["get_status"]
RUNNING, ENDED = (k["kernel_id"] for k in STATUS["kernels"])
CONTAINER = STATUS["kernels"][0]["container_id"]
WIDTHS = (80, 160)

RAW_NUMBERS = re.compile(r"\b\d{7,}(\.\d+)?\b")  # epochs, byte counts
KEY_VALUE = re.compile(r"\w=\w")


class NodeAgent(FakeAgent):
    """Answers get_status and gather_hwinfo as the real agent did."""

    def __init__(self) -> None:
        super().__init__()
        self.status = copy.deepcopy(STATUS)

    async def get_status(self, agent_id: str | None = None) -> dict[str, Any]:
        return copy.deepcopy(self.status)

    async def gather_hwinfo(self, agent_id: str | None = None) -> dict[str, Any]:
        return copy.deepcopy(ANSWERS["gather_hwinfo"])


@pytest.fixture
def agent() -> NodeAgent:
    return NodeAgent()


def screen(agent: FakeAgent, width: int, *args: str) -> str:
    state = CliState(client_factory=lambda _s: ServedClient(agent))
    res: Result = CliRunner().invoke(cli, list(args), obj=state, catch_exceptions=False,
                                     env={"COLUMNS": str(width)})
    assert res.exit_code == 0, res.output
    if os.environ.get("BERTH_SHOW_SCREENS"):
        print(f"\n----- berth {' '.join(args)} at {width} columns\n{res.stdout}")
    return res.stdout


def assert_readable(out: str, width: int) -> None:
    lines = out.splitlines()
    assert lines, "nothing printed"
    too_wide = [ln for ln in lines if len(ln) > width]
    assert not too_wide, too_wide
    assert not RAW_NUMBERS.search(out), RAW_NUMBERS.search(out)
    assert not KEY_VALUE.search(out), KEY_VALUE.search(out)


def labels(out: str) -> list[str]:
    """The ``Label:`` of describe rows (at the start of a line, unindented)."""
    return [m.group(1) for m in re.finditer(r"^([A-Z][\w ]*):  ", out, re.MULTILINE)]


@pytest.mark.parametrize("width", WIDTHS)
def test_agent_status(agent: NodeAgent, width: int) -> None:
    out = screen(agent, width, "agent", "status")
    assert_readable(out, width)
    assert labels(out) == ["Agent", "Version", "Architecture", "Ready", "Uptime", "Events"]
    for heading in ("Slots", "Node usage", "Devices", "Background tasks", "Kernels"):
        assert re.search(rf"^{heading}$", out, re.MULTILINE), heading
    assert re.search(r"mem\s+23\.3 GiB\s+512 MiB\s+22\.8 GiB", out)  # total, used, available
    assert re.search(r"cpu\s+2 cores\s+1 core\s+1 core", out)
    assert re.search(r"cpu_util\s+198\.7%\s+2 cores\s+99\.4%", out)  # % of a core; cores
    assert "image pull" in out and "34.2%" in out  # 700 MiB of 2 GiB pulled
    assert "cuda_util" not in out  # a metric no device reports is not a row
    assert RUNNING in out and ENDED in out  # whole ids: they are what the commands take


@pytest.mark.parametrize("width", WIDTHS)
def test_kernel_ls(agent: NodeAgent, width: int) -> None:
    out = screen(agent, width, "kernel", "ls")
    assert_readable(out, width)
    running = next(ln for ln in out.splitlines() if RUNNING in ln)
    assert "RUNNING" in running and re.search(r"\b\d+s$", running.rstrip())  # age: 17s
    if width == 160:
        assert "1 core, 512 MiB" in running and "http-server 41400->8080" in running
        assert CONTAINER[:12] in running and CONTAINER[:13] not in out


@pytest.mark.parametrize("width", WIDTHS)
@pytest.mark.parametrize("kernel", ["running", "ended"])
def test_kernel_show(agent: NodeAgent, width: int, kernel: str) -> None:
    kid = RUNNING if kernel == "running" else ENDED
    out = screen(agent, width, "kernel", "show", kid)
    assert_readable(out, width)
    found = labels(out)
    assert len(found) == len(set(found)), found  # one concept per row
    assert found[:6] == ["Kernel", "Session", "State", "Image", "Container", "Created"]
    assert out.count(kid) == 1 + (kid == ENDED)  # the ended kernel is its own session
    assert re.search(r"^Created:\s+\d{4}-\d\d-\d\d \d\d:\d\d:\d\d .*ago\)", out, re.MULTILINE)
    assert re.search(r"^Resources$", out, re.MULTILINE)
    assert re.search(r"^Services$", out, re.MULTILINE)
    if kernel == "running":
        assert out.count(CONTAINER) == 1
        assert re.search(r"mem\s+512 MiB\s+root\s+512 MiB", out)
        assert "http://127.0.0.1:41400/" in out and re.search(r"^Usage$", out, re.MULTILINE)
        assert re.search(r"\bmem\s+22 MiB\s+512 MiB\s+4\.3%", out)
    else:
        assert "oom-killed (exit code 137)" in out and "7h02m ago" in out
        assert "https://127.0.0.1:30012/" in out and "http://127.0.0.1:30013/" in out
        assert re.search(r"cuda\.device\s+2\s+GPU-", out) and "16 GiB" in out
        assert "Usage" not in out  # no stats for an ended kernel


@pytest.mark.parametrize("width", WIDTHS)
def test_kernel_top_and_agent_top(agent: NodeAgent, width: int) -> None:
    out = screen(agent, width, "kernel", "top")
    assert_readable(out, width)
    row = next(ln for ln in out.splitlines() if RUNNING in ln)
    assert "22 MiB / 512 MiB" in row and "0.02%" in row
    one = screen(agent, width, "kernel", "top", RUNNING)
    assert_readable(one, width)
    assert re.search(r"cpu_util\s+0\.02%\s+1 core", one) and "ms/s" in one
    node = screen(agent, width, "agent", "top")
    assert_readable(node, width)
    assert re.search(r"^  mem\s+root\s+1\.1 GiB\s+23\.5 GiB", node, re.MULTILINE)


@pytest.mark.parametrize("width", WIDTHS)
def test_agent_hwinfo(agent: NodeAgent, width: int) -> None:
    out = screen(agent, width, "agent", "hwinfo")
    assert_readable(out, width)
    assert "total: 23.5 GiB" in out and "cores: 2" in out
    assert "No such file or directory" in out.replace("\n", " ").replace("  ", " ") or \
        "No such" in out  # long reasons wrap inside their cell


@pytest.mark.parametrize("width", WIDTHS)
def test_kernel_create_and_restart(width: int) -> None:
    agent = FakeAgent()
    out = screen(agent, width, "kernel", "create", "--image", "berth/python:3.11",
                 "--kernel-id", "k1", "--session-id", "s1", "--mem", "512m")
    assert_readable(out, width)
    assert labels(out)[:3] == ["Kernel", "Session", "Container"] and "k1" in out
    out = screen(agent, width, "kernel", "restart", "k1")
    assert_readable(out, width)
    assert "kernel k1 restarted" in out


@pytest.mark.parametrize("width", WIDTHS)
def test_fields_the_screens_do_not_know_are_shown_once_and_nested(width: int) -> None:
    agent = FakeAgent()  # its get_status has another shape: {"agent": {...}, "kernels": [...]}
    agent._create("s1", "k1", {"image": {"canonical": "berth/python:3.11"},
                               "resource_slots": {"cpu": "2", "mem": str(2**29)},
                               "preopen_ports": [8080]})
    agent.kernels["k1"]["labels"] = {"team": "vision", "owner": "ana"}
    out = screen(agent, width, "kernel", "show", "k1")
    assert_readable(out, width)
    assert labels(out) == ["Kernel", "Session", "State", "Image", "Container", "Created",
                           "Ports", "Restarts", "Labels"]
    assert re.search(r"^Labels:\s+team:\s+vision\s*\n\s+owner:\s+ana\s*$", out,
                     re.MULTILINE)  # a sub-table
    assert re.search(r"cpu\s+2 cores", out) and re.search(r"mem\s+512 MiB", out)
    status = screen(agent, width, "agent", "status")
    assert labels(status)[0] == "Agent" and "fake-agent" in status


def test_json_is_the_agents_answer_unchanged(agent: NodeAgent) -> None:
    out = json.loads(screen(agent, 80, "--json", "agent", "status"))
    assert out == STATUS
    row = json.loads(screen(agent, 80, "--json", "kernel", "show", ENDED))
    assert {k: row[k] for k in STATUS["kernels"][1]} == STATUS["kernels"][1]
    assert row["service_urls"]["jupyterlab"] == ["https://127.0.0.1:30012/"]


def test_the_width_follows_the_terminal(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("COLUMNS", raising=False)
    assert render.console().width == render.PIPE_WIDTH  # not a terminal: stdout is captured
    monkeypatch.setenv("COLUMNS", "93")
    assert render.console().width == 93


@pytest.mark.parametrize("width", WIDTHS)
def test_kernel_ls_files(tmp_path: Path, width: int) -> None:
    agent = exec_agent(tmp_path)
    (agent.work / "weights.bin").write_bytes(b"\0" * (3 * 2**20 + 2**19))
    (agent.work / "notes.txt").write_text("12345")
    (agent.work / "data").mkdir()
    out = screen(agent, width, "kernel", "ls-files", "k1")
    assert_readable(out, width)
    assert re.search(r"3\.5 MiB\s.*weights\.bin", out) and re.search(r"5 B\s.*notes\.txt", out)
    assert re.search(r"^drwx", out, re.MULTILINE)


class Images:
    """The engine's image list as ``berth image ls`` reads it."""

    async def image_list(self) -> list[ImageInfo]:
        return [ImageInfo("sha256:4f6e8d15a94c0e27f3b6c140e86fd3e0", ("berth/python:3.11",),
                          {"ai.backend.kernelspec": "1"}, architecture="amd64")]

    async def close(self) -> None:
        return None


@pytest.mark.parametrize("width", WIDTHS)
def test_image_ls(monkeypatch: pytest.MonkeyPatch, width: int) -> None:
    monkeypatch.setattr(image_cli, "open_backend", Images)
    res = CliRunner().invoke(cli, ["image", "ls"], env={"COLUMNS": str(width)})
    assert res.exit_code == 0, res.output
    assert_readable(res.stdout, width)
    assert re.search(r"berth/python:3\.11\s+4f6e8d15a94c\s+x86_64", res.stdout)


def test_event_lines_read_like_docker_events() -> None:
    entry = StreamEntry("1796134195038-0", "kernel_started", "demo-agent",
                        json.dumps({"kernel_id": "k1", "reason": "", "ports": [1, 2]}))
    line = event_line(entry)
    stamp = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(1796134195))
    assert line.startswith(f"{stamp}.038  kernel_started ")
    assert line.endswith("  demo-agent  kernel_id=k1 reason= ports=[1, 2]")
    assert event_line(StreamEntry("x", "n", "s", "not json")).endswith("s  not json")
