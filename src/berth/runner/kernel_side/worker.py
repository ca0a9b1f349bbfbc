"""Runner-side handle of the REPL worker process (stdlib only, Python >= 3.8)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import subprocess
from typing import Any

from . import protocol
from .outputs import FdPump, OutputRouter, Run

log = logging.getLogger("krunner.worker")
EXIT_GRACE = 1.0  # seconds a worker whose pipe closed gets to finish exiting
# The worker starts through the kernel side's only script (krunner.py has the path setup).
RUNNER_SCRIPT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "krunner.py")


class WorkerGone(Exception):
    """The worker process exited (crash, os._exit, kill after a timeout)."""


class ReplWorker:
    def __init__(self, python: str, env: dict[str, str], workdir: str) -> None:
        self._python = python
        self._env = env
        self._workdir = workdir
        self._proc: subprocess.Popen[bytes] | None = None
        self._cmd_fd = -1
        self._evt: FdPump | None = None
        self._router: OutputRouter | None = None
        self._decoder = protocol.FrameDecoder()
        self._ready: asyncio.Future[None] | None = None
        self._completion: asyncio.Future[list[str]] | None = None
        self._run: Run | None = None
        self._write_lock = asyncio.Lock()
        self.exits = 0  # how many workers died; the agent tells each death once by this count
        self._killing = False

    @property
    def alive(self) -> bool:
        return self._proc is not None and self._evt is not None and not self._evt.closed

    @property
    def busy(self) -> bool:
        return self._run is not None

    async def ensure_started(self) -> None:
        if not self.alive:
            self._spawn()
        assert self._ready is not None
        await self._ready

    def _spawn(self) -> None:
        self._killing = False
        cmd_r, cmd_w = os.pipe()
        evt_r, evt_w = os.pipe()
        self._proc = subprocess.Popen(
            [self._python, RUNNER_SCRIPT, protocol.WORKER_FLAG, str(cmd_r), str(evt_w)],
            stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
            pass_fds=(cmd_r, evt_w), cwd=self._workdir, env=self._env, start_new_session=True)
        os.close(cmd_r)
        os.close(evt_w)
        self._cmd_fd = cmd_w
        self._decoder = protocol.FrameDecoder()
        self._ready = asyncio.get_running_loop().create_future()
        assert self._proc.stdout is not None and self._proc.stderr is not None
        self._router = OutputRouter(os.dup(self._proc.stdout.fileno()),
                                    os.dup(self._proc.stderr.fileno()), lambda: None)
        self._proc.stdout.close()
        self._proc.stderr.close()
        self._evt = FdPump(evt_r, self._on_events, self._on_exit)
        log.info("REPL worker started, pid %d", self._proc.pid)

    async def _send(self, message: dict[str, Any]) -> None:
        data = protocol.encode_frame(message)
        loop = asyncio.get_running_loop()
        async with self._write_lock:
            await loop.run_in_executor(None, _write_all, self._cmd_fd, data)

    # commands ------------------------------------------------------------------------------
    async def execute(self, run: Run) -> None:
        """Start `run.code`; the run is finished by the worker's `finished` event."""
        await self.ensure_started()
        assert self._router is not None
        self._run = run
        self._router.route_to(run)
        await self._send({"op": "exec", "code": run.code})

    async def provide_input(self, text: str) -> None:
        await self._send({"op": "input", "text": text})

    async def complete(self, text: str) -> list[str]:
        await self.ensure_started()
        self._completion = asyncio.get_running_loop().create_future()
        await self._send({"op": "complete", "text": text})
        return await self._completion

    def interrupt(self) -> None:
        if self._proc is not None and self._run is not None:
            os.kill(self._proc.pid, signal.SIGINT)

    def kill(self) -> None:
        if self._proc is not None and self._proc.poll() is None:
            self._killing = True
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self._proc.pid, signal.SIGKILL)

    # events --------------------------------------------------------------------------------
    def _on_events(self, data: bytes) -> None:
        for message in self._decoder.feed(data):
            if self._router is not None:
                self._router.drain()
            self._dispatch(message)

    def _dispatch(self, message: dict[str, Any]) -> None:
        ev, run = message.get("ev"), self._run
        if ev == "ready" and self._ready is not None and not self._ready.done():
            self._ready.set_result(None)
        elif ev == "completion" and self._completion is not None and not self._completion.done():
            self._completion.set_result(list(message.get("suggestions") or []))
        elif ev in ("html", "media"):
            if run is not None:
                data = message.get("data", "")
                record = str(data) if ev == "html" else [message.get("mime"), data]
                run.push(protocol.REC_HTML if ev == "html" else protocol.REC_MEDIA, record)
            self._ack()
        elif run is None:
            return
        elif ev == "finished":
            self._end_run(message.get("exitCode"))
        elif ev == "waiting-input":
            run.push_status(protocol.ST_WAITING_INPUT, None,
                            {"is_password": bool(message.get("is_password"))}, sticky=True)

    def _ack(self) -> None:
        # The worker is blocked reading its command pipe, so this tiny write cannot block.
        _write_all(self._cmd_fd, protocol.encode_frame({"op": "ack"}))

    def _end_run(self, exit_code: int | None) -> None:
        run, self._run = self._run, None
        if run is not None:
            run.clear_waiting()
            run.finish(exit_code)

    def _on_exit(self) -> None:
        code, killing = None, self._killing
        if self._proc is not None:
            try:  # its pipe closes a moment before it can be reaped
                code = self._proc.wait(EXIT_GRACE)
            except subprocess.TimeoutExpired:  # alive without its pipe: end it
                killing = True
                self.kill()
                code = self._proc.wait()
        log.warning("REPL worker exited with %s", code)
        self.exits += 1
        if self._run is not None:
            # How the agent learns that the interpreter died (of an OOM kill or SIGBUS, say).
            self._run.worker_exit = {"seq": self.exits, "code": code,
                                     "killed_by_runner": killing}
        if self._router is not None:
            self._router.drain()
            if self._router.sink is not None:
                self._router.sink.push(protocol.REC_STDERR,
                                       "\n[berth] the interpreter exited (%s); state is lost\n" % code)
            self._router.close()
        self._end_run(code if code is not None else -1)
        if self._ready is not None and not self._ready.done():
            self._ready.set_exception(WorkerGone("worker exited with %s" % code))
        if self._completion is not None and not self._completion.done():
            self._completion.set_exception(WorkerGone("worker exited with %s" % code))
        os.close(self._cmd_fd)
        self._evt = None
        self._proc = None

    def shutdown(self) -> None:
        self.kill()


def _write_all(fd: int, data: bytes) -> None:
    while data:
        data = data[os.write(fd, data):]
