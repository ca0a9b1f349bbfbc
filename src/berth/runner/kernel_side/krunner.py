"""Berth's in-kernel runner: serves the agent over a Unix socket inside the container.

Standard library only, Python >= 3.8 (it runs on the image's own interpreter):

    <runtime-path> /opt/berth/runner/krunner.py --socket /home/config/sock/runner.sock \
        --ipc /home/config/ipc --work /home/work --config /home/config \
        [--bootstrap /home/work/bootstrap.sh] [--service-defs /etc/backend.ai/service-defs] \
        [--exec-timeout SECONDS]

Startup: bind the socket (status answers `ready: false` meanwhile), run the bootstrap script to
completion (output in `<ipc dir>/bootstrap.log`), then answer `ready: true`. The socket's
directory is the runner's only until it has bound: the agent then makes it root's, so the
runner writes nothing else there (logs and service state go to `--ipc`, by default the
socket's directory). Runs execute one
at a time in submission order: query code in the REPL worker (persistent globals), batch steps
as shell commands. The framing is in protocol.py; replies are documented on each `op_*`.
"""

from __future__ import annotations

import os
import sys

if __name__ == "__main__" and not __package__:
    # The kernel side's only path setup, for its only script (the container's command, and
    # the REPL worker's through protocol.WORKER_FLAG). Its modules import each other
    # relatively, as one package, but a script belongs to no package, and `-I` leaves even
    # the script's own directory off sys.path (Python >= 3.4). So its parent goes on sys.path
    # and this script joins the package it sits in (PEP 366): `runner` in a kernel
    # (/opt/berth/runner), `kernel_side` in a checkout. The REPL worker takes both entries
    # off sys.path again before it runs user code.
    _HERE = os.path.dirname(os.path.abspath(__file__))
    sys.path.insert(0, os.path.dirname(_HERE))
    __package__ = os.path.basename(_HERE)
    from .protocol import WORKER_FLAG

    if sys.argv[1:2] == [WORKER_FLAG]:
        from .replworker import main as worker_main

        sys.exit(worker_main(sys.argv[1:]))
    # The runner never speaks TLS: asyncio's optional ``import ssl`` (OpenSSL and its
    # bindings) is a sixth of its start-up. Only the runner's own process, never an importer.
    sys.modules.setdefault("ssl", None)  # type: ignore[arg-type]

import argparse
import asyncio
import collections
import contextlib
import logging
import signal
import stat
import subprocess
import time
from typing import Any

from . import protocol
from .batch import BatchRunner, shell_path
from .outputs import Run
from .services import ServiceManager
from .worker import ReplWorker, WorkerGone

log = logging.getLogger("krunner")
MAX_REPLY_CHARS = 1024 * 1024
KEEP_RUNS = 32
INTERRUPT_GRACE = 3.0
SERVICE_TIMEOUT = 30.0


class RequestFailed(Exception):
    def __init__(self, kind: str, message: str) -> None:
        super().__init__(message)
        self.kind = kind


def parse_environ(text: str) -> dict[str, str]:
    """KEY=VALUE lines; blank lines and `#` comments are skipped."""
    env: dict[str, str] = {}
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith("#") or "=" not in line:
            continue
        key, value = line.split("=", 1)
        env[key.strip()] = value
    return env


def user_environment(base: dict[str, str], environ_file: str, workdir: str) -> dict[str, str]:
    """The container's env, HOME set to the work dir, then environ.txt on top, then defaults."""
    env = dict(base, HOME=workdir)
    if os.path.isfile(environ_file):
        with open(environ_file, encoding="utf-8") as f:
            env.update(parse_environ(f.read()))
    env.setdefault("LANG", "C.UTF-8")
    env.setdefault("TERM", "xterm")
    local_bin = os.path.join(workdir, ".local", "bin")
    env["PATH"] = local_bin + os.pathsep + env.get("PATH", "/usr/local/bin:/usr/bin:/bin")
    env.pop("PYTHONSTARTUP", None)
    return env


class Runner:
    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.started_at = time.time()
        self.ready = False
        self.bootstrap_exit: int | None = None
        self.ipc_dir = args.ipc or os.path.dirname(os.path.abspath(args.socket))
        self.env = user_environment(dict(os.environ), os.path.join(args.config, "environ.txt"),
                                    args.work)
        self.worker = ReplWorker(sys.executable, self.env, args.work)
        self.batch = BatchRunner(self.env, args.work, sys.executable)
        self.services = ServiceManager(args.service_defs, sys.executable, self.env, args.work,
                                       os.path.join(self.ipc_dir, "services"))
        self.runs: collections.OrderedDict[str, Run] = collections.OrderedDict()
        self.queue: asyncio.Queue[Run] = asyncio.Queue()
        self.current: Run | None = None
        self.stopping = asyncio.Event()
        self.claimed = asyncio.Event()  # --warm: set by the agent's claim
        if not args.warm:
            self.claimed.set()

    # lifecycle ---------------------------------------------------------------------------
    async def main(self) -> int:
        server = await self._bind()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
            loop.add_signal_handler(sig, self.stopping.set)
        executor = loop.create_task(self._executor())
        try:
            await self.claimed.wait()  # a warm-pool container becomes a kernel first
            await self._bootstrap()
            self.ready = True
            _tell_ready(self.ipc_dir)
            log.info("runner ready (bootstrap exit %s)", self.bootstrap_exit)
            prestart = loop.create_task(self._prestart_worker())
            await self.stopping.wait()
            prestart.cancel()
        finally:
            executor.cancel()
            server.close()
            await self.services.shutdown_all()
            self.worker.shutdown()
            _unlink(self.args.socket)
        return 0

    async def _bind(self) -> asyncio.AbstractServer:
        os.makedirs(os.path.dirname(os.path.abspath(self.args.socket)), exist_ok=True)
        _unlink(self.args.socket)
        server = await asyncio.start_unix_server(self._serve_connection, path=self.args.socket)
        os.chmod(self.args.socket, 0o660)
        return server

    async def _prestart_worker(self) -> None:
        """Start the code interpreter once ready, not at the first run: its start-up then
        overlaps the agent's reply to the Manager instead of delaying the first execute. One
        that fails is started again (and its error reported) by the first run."""
        try:
            await self.worker.ensure_started()
        except (WorkerGone, OSError) as exc:
            log.warning("REPL worker did not start ahead of the first run: %s", exc)

    async def _bootstrap(self) -> None:
        script = self.args.bootstrap
        if not script or not os.path.isfile(script):
            return
        log_path = os.path.join(self.ipc_dir, "bootstrap.log")
        loop = asyncio.get_running_loop()
        with open(log_path, "wb") as logf:  # noqa: ASYNC230 - opening a log file is quick
            proc = subprocess.Popen(  # noqa: ASYNC220 - waited for in an executor below
                [shell_path(), script], stdin=subprocess.DEVNULL, stdout=logf,
                stderr=subprocess.STDOUT, cwd=self.args.work, env=self.env,
                start_new_session=True)
            self.bootstrap_exit = await loop.run_in_executor(None, proc.wait)

    # runs ----------------------------------------------------------------------------------
    def submit(self, run_id: str, mode: str, code: str, opts: dict[str, Any]) -> Run:
        run = Run(run_id, mode, code, opts)
        self.runs[run_id] = run
        while len(self.runs) > KEEP_RUNS:
            oldest = next(iter(self.runs.values()))
            if not oldest.done.is_set():
                break
            self.runs.popitem(last=False)
        self.queue.put_nowait(run)
        return run

    async def _executor(self) -> None:
        while True:
            run = await self.queue.get()
            self.current = run
            try:
                await self._perform(run)
            except Exception as exc:  # a failing run must not stop the runner
                log.exception("run %s failed", run.run_id)
                run.push(protocol.REC_STDERR, "[berth] runner error: %s\n" % exc)
                run.finish(1)
            finally:
                self.current = None

    async def _perform(self, run: Run) -> None:
        task: asyncio.Future[Any]
        if run.mode == "batch":
            task = asyncio.ensure_future(self.batch.run(run))
        else:
            try:
                await self.worker.execute(run)
            except WorkerGone as exc:
                run.push(protocol.REC_STDERR, "[berth] interpreter failed to start: %s\n" % exc)
                run.finish(1)
                return
            task = asyncio.ensure_future(run.done.wait())
        limit = float(run.opts.get("exec_timeout") or self.args.exec_timeout or 0)
        done, _ = await asyncio.wait({task}, timeout=limit if limit > 0 else None)
        if not done:
            await self._time_out(run, task)
        await task

    async def _time_out(self, run: Run, task: asyncio.Future[Any]) -> None:
        log.warning("run %s exceeded its time limit", run.run_id)
        run.timed_out = True
        self._interrupt(run)
        done, _ = await asyncio.wait({task}, timeout=INTERRUPT_GRACE)
        if not done:
            if run.mode == "batch":
                self.batch.interrupt(signal.SIGKILL)
            else:
                self.worker.kill()

    def _interrupt(self, run: Run) -> None:
        if run.mode == "batch":
            self.batch.interrupt()
        else:
            self.worker.interrupt()

    # requests ------------------------------------------------------------------------------
    async def op_status(self, req: dict[str, Any]) -> dict[str, Any]:
        """{ready, started_at, bootstrap_exit, python, pid, current_run}"""
        return {"ready": self.ready, "started_at": self.started_at,
                "bootstrap_exit": self.bootstrap_exit,
                "python": "%d.%d.%d" % sys.version_info[:3], "pid": os.getpid(),
                "current_run": self.current.run_id if self.current else None}

    async def op_execute(self, req: dict[str, Any]) -> dict[str, Any]:
        """{runId, status, exitCode, options, records: [[kind, data], ...]}"""
        mode = str(req.get("mode", ""))
        run_id = str(req.get("run_id") or os.urandom(16).hex())  # uuid costs 4 ms to import
        run = self.runs.get(run_id)
        if mode in ("query", "batch"):
            # Same id while in flight: a retried request. Finished: a new run (batch-job reuses ids).
            if run is None or run.done.is_set():
                self.runs.pop(run_id, None)
                run = self.submit(run_id, mode, str(req.get("code") or ""), dict(req.get("opts") or {}))
        elif mode in ("input", "continue"):
            if run is None:
                raise RequestFailed("UnknownRun", "no run %s" % run_id)
            if mode == "input" and run.waiting_input:
                run.clear_waiting()
                await self.worker.provide_input(str(req.get("code") or ""))
        else:
            raise RequestFailed("InvalidMode", "unknown execute mode %r" % mode)
        flush = req.get("flush_timeout")
        limit = int(req.get("max_chars") or MAX_REPLY_CHARS)
        return await run.collect(None if flush is None else float(flush), limit)

    async def op_complete(self, req: dict[str, Any]) -> dict[str, Any]:
        """{suggestions: [...]}; empty while a run occupies the interpreter."""
        if self.worker.busy:
            return {"suggestions": [], "busy": True}
        return {"suggestions": await self.worker.complete(str(req.get("text") or ""))}

    async def op_interrupt(self, req: dict[str, Any]) -> dict[str, Any]:
        """{interrupted: run id or None}"""
        run = self.current
        if run is not None:
            self._interrupt(run)
        return {"interrupted": run.run_id if run else None}

    async def op_claim(self, req: dict[str, Any]) -> dict[str, Any]:
        """A warm-pool runner becomes the kernel's: its environment (``environ`` over the
        container's, less ``unset``, then environ.txt) for everything it starts from now on;
        the code worker starts only after this. {ready}"""
        if self.claimed.is_set():
            raise RequestFailed("AlreadyClaimed", "this runner is not waiting for a claim")
        unset = set(req.get("unset") or [])
        base = {k: v for k, v in os.environ.items() if k not in unset}
        base.update({str(k): str(v) for k, v in (req.get("environ") or {}).items()})
        self.env = user_environment(base, os.path.join(self.args.config, "environ.txt"),
                                    self.args.work)
        self.worker = ReplWorker(sys.executable, self.env, self.args.work)
        self.batch = BatchRunner(self.env, self.args.work, sys.executable)
        self.services = ServiceManager(self.args.service_defs, sys.executable, self.env,
                                       self.args.work, os.path.join(self.ipc_dir, "services"))
        self.claimed.set()
        for turn in range(1000):  # main() turns ready within a few loop turns (no bootstrap)
            if self.ready:
                break
            await asyncio.sleep(0 if turn < 100 else 0.001)
        return {"ready": self.ready}

    async def op_start_service(self, req: dict[str, Any]) -> dict[str, Any]:
        """{status: started|running|failed, error?}"""
        ports = [int(p) for p in req.get("ports") or []]
        return await self.services.start(
            str(req.get("name")), str(req.get("protocol") or "tcp"), ports,
            dict(req.get("options") or {}), float(req.get("launch_timeout") or SERVICE_TIMEOUT))

    async def op_shutdown_service(self, req: dict[str, Any]) -> dict[str, Any]:
        await self.services.shutdown(str(req.get("name")))
        return {}

    # connections ---------------------------------------------------------------------------
    async def _serve_connection(self, reader: asyncio.StreamReader,
                                writer: asyncio.StreamWriter) -> None:
        decoder = protocol.FrameDecoder()
        tasks: set[asyncio.Task[None]] = set()
        try:
            while True:
                data = await reader.read(65536)
                if not data:
                    break
                for req in decoder.feed(data):
                    task = asyncio.ensure_future(self._answer(req, writer))
                    tasks.add(task)
                    task.add_done_callback(tasks.discard)
        except (protocol.FrameError, ConnectionError) as exc:
            log.warning("dropping agent connection: %s", exc)
        finally:
            for task in tasks:
                task.cancel()
            writer.close()

    async def _answer(self, req: dict[str, Any], writer: asyncio.StreamWriter) -> None:
        request_id = req.get("id")
        handler = getattr(self, "op_" + str(req.get("op")), None)
        try:
            if handler is None:
                raise RequestFailed("UnknownOp", "unknown op %r" % req.get("op"))
            reply = protocol.ok_reply(request_id, await handler(req))
        except RequestFailed as exc:
            reply = protocol.error_reply(request_id, exc.kind, str(exc))
        except Exception as exc:  # noqa: BLE001 - every request gets an answer, whatever failed
            reply = protocol.error_reply(request_id, exc.__class__.__name__, str(exc))
        if not writer.is_closing():
            writer.write(protocol.encode_frame(reply))
            with contextlib.suppress(ConnectionError):
                await writer.drain()


def _tell_ready(ipc_dir: str) -> None:
    """Wake the agent, which holds the ready FIFO open while the container starts (it then
    asks `status`). Nothing to do when no agent listens or the FIFO is not one."""
    try:
        fd = os.open(os.path.join(ipc_dir, protocol.READY_FIFO),
                     os.O_WRONLY | os.O_NONBLOCK | os.O_NOFOLLOW | os.O_CLOEXEC)
    except OSError:  # ENXIO: no reader; ENOENT: no FIFO (an adopted runner, say)
        return
    try:
        if stat.S_ISFIFO(os.fstat(fd).st_mode):
            os.write(fd, b"r")
    except OSError:
        pass
    finally:
        os.close(fd)


def _unlink(path: str) -> None:
    with contextlib.suppress(OSError):  # gone, or its directory was sealed by the agent
        os.unlink(path)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="krunner", description=__doc__.splitlines()[0])
    parser.add_argument("--socket", required=True)
    parser.add_argument("--ipc", default=None)
    parser.add_argument("--work", default="/home/work")
    parser.add_argument("--config", default="/home/config")
    parser.add_argument("--bootstrap", default=None)
    parser.add_argument("--service-defs", dest="service_defs", default=None)
    parser.add_argument("--exec-timeout", dest="exec_timeout", type=float, default=0.0)
    parser.add_argument("--warm", action="store_true",
                        help="a warm-pool container: wait for the agent's claim before ready")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, stream=sys.stderr,
                        format="krunner %(levelname)s %(name)s: %(message)s")
    args = parse_args(argv)
    loop = asyncio.new_event_loop()
    asyncio.set_event_loop(loop)
    try:
        return loop.run_until_complete(Runner(args).main())
    finally:
        loop.close()


if __name__ == "__main__":
    sys.exit(main())
