"""`berth kernel top` / `berth agent top` over get_status stats, through the in-memory RPC:
one frame when not on a terminal (or `--once`), a frame per refresh with `--watch`, and on a
terminal a screen redrawn in place."""

from __future__ import annotations

import io
import json
import re
from typing import Any

import pytest
from click.testing import CliRunner, Result
from rich.console import Console
from support.served import ServedClient

from berth.cli import CliState, cli, top
from berth.cli.stats_view import format_metric, kernel_row, metric_rows
from berth.rpc.fake import FakeAgent


def mv(current: str, unit: str, capacity: str | None = None, pct: str | None = None,
       **stats: str) -> dict[str, Any]:
    return {"current": current, "capacity": capacity, "pct": pct, "unit_hint": unit,
            "stats.version": 2, **{f"stats.{k}": v for k, v in stats.items()}}


K1_STATS = {
    "cpu_util": mv("37.5", "percent", "200", "18.75", avg="30"),
    "cpu_used": mv("12345", "msec", diff="500", rate="375"),
    "mem": mv(str(48 * 2**20), "bytes", str(256 * 2**20), "18.75"),
    "io_read": mv(str(10 * 2**20), "bytes", rate=str(2 * 2**20)),
    "io_write": mv("0", "bytes", rate="0"),
    "net_rx": mv("1536", "bps"),
    "net_tx": mv("0", "bps"),
    "pids": mv("7", "count", "4096", "0.17"),
}
NODE_STATS = {
    "node": {"cpu_util": mv("850", "msec", "2000", "42.5"),
             "mem": mv(str(3 * 2**30), "bytes", str(8 * 2**30), "37.5")},
    "devices": {"cpu_util": {"0": mv("400", "msec", "1000", "40"),
                             "1": mv("450", "msec", "1000", "45")},
                "mem": {"root": mv(str(3 * 2**30), "bytes", str(8 * 2**30), "37.5")}},
}


class StatsAgent(FakeAgent):
    """get_status as the agent answers once stats are wired: per-kernel stats, node_stats."""

    def __init__(self) -> None:
        super().__init__()
        self.stats: dict[str, dict[str, Any]] = {}
        self.node_stats: dict[str, Any] | None = None
        self.status_calls = 0

    async def get_status(self, agent_id: str | None = None) -> dict[str, Any]:
        self.status_calls += 1
        status = await super().get_status(agent_id)
        status["agent_id"], status["uptime"] = "fake-agent", 12.5
        for kern in status["kernels"]:
            if kern["id"] in self.stats:
                kern["stats"] = self.stats[kern["id"]]
        if self.node_stats is not None:
            status["node_stats"] = self.node_stats
        return status


@pytest.fixture
def agent() -> StatsAgent:
    fake = StatsAgent()
    fake._create("s1", "k1", {"image": {"canonical": "berth/python:3.11"}})
    fake._create("s2", "k2", {"image": {"canonical": "berth/busybox:latest"}})
    fake.stats["k1"] = K1_STATS
    return fake


def invoke(agent: FakeAgent, *args: str) -> Result:
    state = CliState(client_factory=lambda _s: ServedClient(agent))
    return CliRunner().invoke(cli, list(args), obj=state, catch_exceptions=False,
                              env={"COLUMNS": "160"})


def test_kernel_top_table_formats_units_and_tolerates_missing_stats(agent: StatsAgent) -> None:
    res = invoke(agent, "kernel", "top")
    assert res.exit_code == 0, res.output
    k1 = next(line for line in res.stdout.splitlines() if "k1" in line)
    for shown in ("37.5%", "12s", "48 MiB / 256 MiB", "18.8%", "2 MiB/s", "0 B/s",
                  "1.5 KiB/s", "7"):
        assert shown in k1, shown
    k2 = next(line for line in res.stdout.splitlines() if "k2" in line)
    assert k2.count(" - ") >= 8  # no stats yet: every metric column shows "-"


def test_kernel_top_one_kernel_lists_every_metric(agent: StatsAgent) -> None:
    res = invoke(agent, "kernel", "top", "k1")
    assert res.exit_code == 0
    for key in K1_STATS:
        assert key in res.stdout
    assert re.search(r"cpu_util\s+37\.5%\s+2 cores\s+18\.8%", res.stdout)  # % of one core
    assert re.search(r"io_read\s+10 MiB\s+-\s+-\s+2 MiB/s", res.stdout)  # and its rate
    assert invoke(agent, "kernel", "top", "nope").exit_code == 3
    assert "kernel k2" in invoke(agent, "kernel", "top", "k2").stdout


def test_kernel_top_json(agent: StatsAgent) -> None:
    rows = json.loads(invoke(agent, "kernel", "top", "--json").stdout)
    assert {r["kernel_id"]: r["stats"] for r in rows} == {"k1": K1_STATS, "k2": None}


def test_agent_top_node_devices_and_kernels(agent: StatsAgent) -> None:
    agent.node_stats = NODE_STATS
    res = invoke(agent, "agent", "top")
    assert res.exit_code == 0
    out = res.stdout
    assert "agent fake-agent, up 12s" in out and "42.5%" in out
    assert "3 GiB" in out and "8 GiB" in out and "0.8s" in out
    assert any("cpu_util" in ln and "0.5s" in ln and "45%" in ln for ln in out.splitlines())
    assert "k1" in out and "k2" in out
    body = json.loads(invoke(agent, "agent", "top", "--json").stdout)
    assert body["node_stats"] == NODE_STATS and len(body["kernels"]) == 2


def test_agent_top_without_node_stats(agent: StatsAgent) -> None:
    res = invoke(agent, "agent", "top")
    assert res.exit_code == 0 and "k1" in res.stdout


def test_watch_refreshes_until_the_iteration_limit(agent: StatsAgent) -> None:
    res = invoke(agent, "kernel", "top", "--watch", "0.1", "-n", "3")
    assert res.exit_code == 0 and agent.status_calls == 3
    assert res.stdout.count("KERNEL") == 3
    assert invoke(agent, "kernel", "top", "--watch", "0").exit_code == 2


def test_format_metric_edge_cases() -> None:
    assert format_metric(None) == "-"
    assert format_metric({"current": None}) == "-"
    assert format_metric({"current": "not-a-number", "unit_hint": "bytes"}) == "not-a-number"
    assert format_metric({"current": "NaN", "unit_hint": "bytes"}) == "NaN"
    assert format_metric({"current": "1.50", "unit_hint": "mystery"}) == "1.5"
    assert format_metric({"current": "1023", "unit_hint": "bytes"}) == "1023 B"
    assert format_metric({"current": "5", "unit_hint": "bytes", "stats.rate": "2048"},
                         "stats.rate") == "2 KiB/s"
    assert format_metric({"current": "5", "unit_hint": "msec", "stats.rate": "12.5"},
                         "stats.rate") == "12.5 ms/s"
    assert format_metric({"capacity": "400", "unit_hint": "percent"}, "capacity",
                         "cpu_util") == "4 cores"
    assert format_metric({"capacity": "100", "unit_hint": "percent"}, "capacity",
                         "cuda_util") == "100%"
    assert metric_rows("garbage") == [] and metric_rows({}) == []


def test_kernel_row_without_stats() -> None:
    row = kernel_row({"id": "kx", "state": "RUNNING", "stats": "garbage"})
    assert row["kernel"] == "kx" and row["cpu_util"] == "-"


def test_once_prints_one_frame_even_with_watch(agent: StatsAgent) -> None:
    res = invoke(agent, "kernel", "top", "--once", "--watch", "0.1", "-n", "3")
    assert res.exit_code == 0 and agent.status_calls == 1
    assert res.stdout.count("KERNEL") == 1


def test_on_a_terminal_top_redraws_in_place(agent: StatsAgent,
                                            monkeypatch: pytest.MonkeyPatch) -> None:
    """Without --once on a terminal: one screen refreshed in place (cursor moved back up
    over the last frame, nothing scrolls), until -n refreshes."""
    screen = io.StringIO()
    monkeypatch.setattr(top, "on_terminal", lambda: True)
    monkeypatch.setattr(top.render, "console", lambda *a, **k: Console(
        file=screen, width=100, force_terminal=True, color_system=None))
    res = invoke(agent, "agent", "top", "--watch", "0.1", "-n", "3")
    assert res.exit_code == 0 and agent.status_calls == 3
    out = screen.getvalue()
    assert out.count("KERNEL") >= 3  # three frames drawn (rich draws the last once more) ...
    assert "\x1b[1A" in out and "\x1b[2K" in out  # ... each over the last
    assert res.stdout == ""  # the screen, not the output stream, got them
