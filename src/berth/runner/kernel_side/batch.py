"""Batch mode: `clean`, `build`, `exec` shell commands with their exit codes (stdlib only).

Semantics of Backend.AI's krunner: each step answers `clean-finished` / `build-finished` /
`finished` with its exitCode; an empty command is skipped (exitCode 0); `*` picks a default
(build: `pip install --user -r requirements.txt` when that file exists, exec: `main.py`);
after a failed build, exec is not run and finishes with exitCode 127.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import signal
import subprocess

from . import protocol
from .outputs import OutputRouter, Run

BUILD_FAILED_EXIT = 127
STEPS = (("clean", protocol.ST_CLEAN_FINISHED), ("build", protocol.ST_BUILD_FINISHED))


def default_command(step: str, workdir: str, python: str) -> str:
    if step == "build" and os.path.exists(os.path.join(workdir, "requirements.txt")):
        return "%s -m pip install --user -r requirements.txt" % python
    if step == "exec" and os.path.exists(os.path.join(workdir, "main.py")):
        return "%s main.py" % python
    return ""


def shell_path() -> str:
    return shutil.which("bash") or "/bin/sh"


class BatchRunner:
    """Runs one batch run's steps; `interrupt` signals the step's whole process group."""

    def __init__(self, env: dict[str, str], workdir: str, python: str) -> None:
        self._env = dict(env, _BACKEND_BATCH_MODE="1")
        self._workdir = workdir
        self._python = python
        self._proc: subprocess.Popen[bytes] | None = None

    def interrupt(self, sig: int = signal.SIGINT) -> None:
        if self._proc is not None and self._proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self._proc.pid, sig)

    async def run(self, run: Run) -> None:
        build_ok = True
        for step, status in STEPS:
            code = await self._step(run, step)
            run.push_status(status, code)
            if step == "build":
                build_ok = code == 0
        if not build_ok:
            run.finish(BUILD_FAILED_EXIT)
            return
        run.finish(await self._step(run, "exec"))

    async def _step(self, run: Run, step: str) -> int:
        command = str(run.opts.get(step) or "")
        if command.strip() == "*":
            command = default_command(step, self._workdir, self._python)
        if not command.strip() or run.timed_out:
            return 0
        return await self._spawn(run, command)

    async def _spawn(self, run: Run, command: str) -> int:
        loop = asyncio.get_running_loop()
        eof = loop.create_future()
        proc = subprocess.Popen(  # noqa: ASYNC220 - raw pipe fds feed the pumps; fork is quick
            [shell_path(), "-c", command], stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
            stderr=subprocess.PIPE, cwd=self._workdir, env=self._env, start_new_session=True)
        self._proc = proc
        assert proc.stdout is not None and proc.stderr is not None

        def on_eof() -> None:
            if not eof.done():
                eof.set_result(None)

        router = OutputRouter(os.dup(proc.stdout.fileno()), os.dup(proc.stderr.fileno()), on_eof)
        proc.stdout.close()
        proc.stderr.close()
        router.route_to(run)
        try:
            await eof
            code = await loop.run_in_executor(None, proc.wait)
            return 128 - code if code < 0 else code
        finally:
            router.close()
            self._proc = None
