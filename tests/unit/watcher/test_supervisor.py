"""AgentSupervisor with a small Python child standing in for the agent (no sockets)."""

from __future__ import annotations

import asyncio
import subprocess
import sys
from pathlib import Path

from berth.watcher import AgentStatus, AgentSupervisor, default_agent_command

CHILD = """
import signal, sys, time, pathlib
log = pathlib.Path(sys.argv[1])
def on_hup(*_):
    with log.open("a") as f: f.write("hup\\n")
signal.signal(signal.SIGHUP, on_hup)
if len(sys.argv) > 2: signal.signal(signal.SIGTERM, signal.SIG_IGN)
with log.open("a") as f: f.write("start\\n")
while True: time.sleep(0.05)
"""


def sup(tmp_path: Path, *extra: str, timeout: float = 5.0) -> tuple[AgentSupervisor, Path]:
    log = tmp_path / "child.log"
    return AgentSupervisor([sys.executable, "-c", CHILD, str(log), *extra],
                           stop_timeout=timeout), log


async def wait_lines(log: Path, n: int) -> list[str]:
    for _ in range(200):
        if log.exists() and len(lines := log.read_text().split()) >= n:
            return lines
        await asyncio.sleep(0.02)
    raise AssertionError(f"child log never reached {n} lines")


async def test_start_stop_restart(tmp_path: Path) -> None:
    s, log = sup(tmp_path)
    assert s.status.value == "inactive"
    assert await s.start() and not await s.start()
    pid = s.pid
    assert s.status is AgentStatus.ACTIVE and pid
    await wait_lines(log, 1)
    await s.restart()
    assert s.pid not in (None, pid) and s.starts == 2
    assert await s.stop() and not await s.stop()
    assert s.status.value == "inactive" and s.pid is None


async def test_soft_reset_sends_sighup(tmp_path: Path) -> None:
    s, log = sup(tmp_path)
    await s.start()
    await wait_lines(log, 1)
    pid = s.pid
    assert await s.soft_reset() == "signalled"
    assert await wait_lines(log, 2) == ["start", "hup"]
    assert s.pid == pid
    await s.stop()


async def test_soft_reset_restarts_when_signals_disabled(tmp_path: Path) -> None:
    s, log = sup(tmp_path)
    s.soft_reset_signal = False
    await s.start()
    await wait_lines(log, 1)
    assert await s.soft_reset() == "restarted"
    assert await wait_lines(log, 2) == ["start", "start"]
    await s.stop()


async def test_stubborn_agent_is_killed_after_timeout(tmp_path: Path) -> None:
    s, log = sup(tmp_path, "ignore-term", timeout=0.3)
    await s.start()
    await wait_lines(log, 1)
    assert await s.stop()
    assert s.exit_code == -9 and s.status is AgentStatus.FAILED


async def test_crashed_agent_reports_failed(tmp_path: Path) -> None:
    s = AgentSupervisor([sys.executable, "-c", "raise SystemExit(3)"])
    await s.start()
    for _ in range(100):
        if not s.running:
            break
        await asyncio.sleep(0.02)
    assert s.status is AgentStatus.FAILED and s.exit_code == 3


def test_default_command() -> None:
    assert default_agent_command("/etc/agent.toml", "/py") == [
        "/py", "-m", "berth", "start-server", "-f", "/etc/agent.toml"]


def test_default_command_reaches_the_agent_entry_point(tmp_path: Path) -> None:
    """The default command must run ``berth start-server``, not import a module and exit 0:
    with a config naming an unknown key, start-server refuses it (exit 2, key path named)."""
    bad = tmp_path / "agent.toml"
    bad.write_text("[agent]\nno-such-key = 1\n")
    cmd = default_agent_command(str(bad), sys.executable)
    res = subprocess.run(cmd, capture_output=True, text=True, timeout=60, check=False)
    assert res.returncode == 2, (res.returncode, res.stdout, res.stderr)
    assert "no-such-key" in res.stdout + res.stderr
