"""Supervises the agent as a child process: start, stop (SIGTERM to the agent only), restart.

The agent runs in its own session so that signals aimed at the watcher never reach it, and
stopping it never touches kernels: those are Docker containers, children of dockerd, which
the agent adopts again when it starts.
"""

from __future__ import annotations

import asyncio
import logging
import signal
from collections.abc import Mapping, Sequence
from enum import StrEnum

log = logging.getLogger(__name__)


class AgentStatus(StrEnum):
    ACTIVE = "active"
    INACTIVE = "inactive"
    FAILED = "failed"


class AgentSupervisor:
    def __init__(self, command: Sequence[str], *, stop_timeout: float = 30.0,
                 soft_reset_signal: bool = True, env: Mapping[str, str] | None = None,
                 cwd: str | None = None) -> None:
        if not command:
            raise ValueError("agent command must not be empty")
        self.command = list(command)
        self.stop_timeout = stop_timeout
        self.soft_reset_signal = soft_reset_signal
        self._env = dict(env) if env is not None else None
        self._cwd = cwd
        self._proc: asyncio.subprocess.Process | None = None
        self._lock = asyncio.Lock()
        self.starts = 0

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self.running and self._proc else None

    @property
    def running(self) -> bool:
        return self._proc is not None and self._proc.returncode is None

    @property
    def status(self) -> AgentStatus:
        if self._proc is None:
            return AgentStatus.INACTIVE
        code = self._proc.returncode
        if code is None:
            return AgentStatus.ACTIVE
        return AgentStatus.INACTIVE if code in (0, -signal.SIGTERM) else AgentStatus.FAILED

    @property
    def exit_code(self) -> int | None:
        return None if self._proc is None else self._proc.returncode

    async def start(self) -> bool:
        """Start the agent; False when it is already running."""
        async with self._lock:
            return await self._start()

    async def stop(self) -> bool:
        """SIGTERM the agent, SIGKILL after ``stop_timeout``; False when it was not running."""
        async with self._lock:
            return await self._stop()

    async def restart(self) -> None:
        async with self._lock:
            await self._stop()
            await self._start()

    async def soft_reset(self) -> str:
        """SIGHUP the running agent (it reloads), or restart it when signals are disabled."""
        async with self._lock:
            if self.soft_reset_signal and self.running and self._proc is not None:
                self._proc.send_signal(signal.SIGHUP)
                log.info("sent SIGHUP to agent pid %d", self._proc.pid)
                return "signalled"
            await self._stop()
            await self._start()
            return "restarted"

    async def hard_reset(self) -> None:
        await self.restart()

    async def _start(self) -> bool:
        if self.running:
            return False
        self._proc = await asyncio.create_subprocess_exec(
            *self.command, env=self._env, cwd=self._cwd, start_new_session=True)
        self.starts += 1
        log.info("agent started: pid %d (%s)", self._proc.pid, " ".join(self.command))
        return True

    async def _stop(self) -> bool:
        proc = self._proc
        if proc is None or proc.returncode is not None:
            return False
        proc.send_signal(signal.SIGTERM)
        try:
            await asyncio.wait_for(proc.wait(), self.stop_timeout)
        except TimeoutError:
            log.warning("agent pid %d ignored SIGTERM for %.0fs; killing it",
                        proc.pid, self.stop_timeout)
            proc.kill()
            await proc.wait()
        log.info("agent pid %d stopped (exit %s)", proc.pid, proc.returncode)
        return True


def default_agent_command(config_path: str | None, python: str) -> list[str]:
    """``[python, -m, berth, start-server, (-f CONFIG)]``: the real agent (``berth/__main__.py``)."""
    cmd = [python, "-m", "berth", "start-server"]
    if config_path:
        cmd += ["-f", config_path]
    return cmd
