"""Service processes inside the kernel, started on demand from service definitions (stdlib only).

A start succeeds when the service's first port accepts TCP on 127.0.0.1 within the launch
timeout; `preopen` ports are only reported `started` (the user's own program listens there).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import subprocess
import tempfile
import time
from typing import Any, Mapping, Sequence

from . import servicedefs
from .batch import shell_path

log = logging.getLogger("krunner.services")
STOP_GRACE = 5.0


class ServiceFailed(Exception):
    pass


def _body(args: Mapping[str, Any]) -> str:
    body = args.get("body", "")
    return "\n".join(str(b) for b in body) + "\n" if isinstance(body, list) else str(body)


def _mode(args: Mapping[str, Any]) -> int | None:
    mode = args.get("mode")
    return int(mode, 8) if isinstance(mode, str) else mode


def run_action(action: servicedefs.PrestartAction, variables: dict[str, Any], workdir: str) -> Any:
    """Run one prestart action (args already interpolated); returns the value for its `ref`."""
    args = action.args
    if action.action in ("write_file", "writelines"):
        path = str(args["filename"])
        with open(path, "a" if args.get("append") else "w") as f:
            f.write(_body(args))
        mode = _mode(args)
        if mode is not None:
            os.chmod(path, mode)
        return path
    if action.action == "write_tempfile":
        # ".py" as Backend.AI's: Jupyter (traitlets) loads a --config file by its extension.
        fd, path = tempfile.mkstemp(prefix="berth-svc-", suffix=".py")
        with os.fdopen(fd, "w") as f:
            f.write(_body(args))
        os.chmod(path, _mode(args) or 0o600)
        return path
    if action.action == "mkdir":
        os.makedirs(str(args["path"]), exist_ok=True)
        return str(args["path"])
    if action.action == "run_command":
        done = subprocess.run([str(a) for a in args["command"]], cwd=workdir,
                              capture_output=True, timeout=30, check=False)
        return done.stdout.decode("utf-8", "replace").strip()
    log.info("service prestart: %s", _body(args).strip())
    return None


class ServiceManager:
    def __init__(self, defs_dir: str | None, runtime_path: str, env: dict[str, str],
                 workdir: str, log_dir: str) -> None:
        self._defs_dir = defs_dir
        self._runtime_path = runtime_path
        self._env = env
        self._workdir = workdir
        self._log_dir = log_dir
        self._procs: dict[str, subprocess.Popen[bytes]] = {}
        self._locks: dict[str, asyncio.Lock] = {}

    def definition(self, name: str) -> servicedefs.ServiceDefinition | None:
        if not self._defs_dir or "/" in name or name.startswith("."):
            return None
        path = os.path.join(self._defs_dir, name + ".json")
        if not os.path.isfile(path):
            return None
        with open(path, encoding="utf-8") as f:
            return servicedefs.parse_definition_text(name, f.read())

    def names(self) -> list[str]:
        if not self._defs_dir or not os.path.isdir(self._defs_dir):
            return []
        return sorted(n[:-5] for n in os.listdir(self._defs_dir) if n.endswith(".json"))

    def running(self, name: str) -> bool:
        proc = self._procs.get(name)
        return proc is not None and proc.poll() is None

    async def start(self, name: str, protocol: str, ports: Sequence[int],
                    options: Mapping[str, Any], timeout: float) -> dict[str, Any]:
        if protocol == "preopen":
            return {"status": "started"}
        lock = self._locks.setdefault(name, asyncio.Lock())
        async with lock:
            if self.running(name):
                return {"status": "running"}
            try:
                await self._launch(name, list(ports), options, timeout)
            except (ServiceFailed, servicedefs.ServiceDefinitionError, OSError,
                    KeyError, subprocess.SubprocessError) as exc:
                self._stop_now(name)
                return {"status": "failed", "error": str(exc) or exc.__class__.__name__}
            return {"status": "started"}

    async def _launch(self, name: str, ports: list[int], options: Mapping[str, Any],
                      timeout: float) -> None:
        defn = self.definition(name)
        if defn is None:
            raise ServiceFailed("no service definition for %r" % name)
        if defn.noop:
            return
        variables: dict[str, Any] = {"runtime_path": self._runtime_path, "ports": ports}
        for action in defn.prestart:
            resolved = action._replace(args=servicedefs.interpolate(action.args, variables))
            value = run_action(resolved, variables, self._workdir)
            if action.ref:
                variables[action.ref] = value
        argv = servicedefs.build_argv(defn, variables, options, shell_path())
        env = dict(self._env, **servicedefs.build_env(defn, variables, options))
        self._procs[name] = self._spawn(name, argv, env)
        if ports:
            await self._await_port(name, ports[0], timeout)

    def _spawn(self, name: str, argv: list[str], env: dict[str, str]) -> subprocess.Popen[bytes]:
        os.makedirs(self._log_dir, exist_ok=True)
        with open(os.path.join(self._log_dir, name + ".log"), "ab") as logf:
            proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=logf, stderr=logf,
                                    cwd=self._workdir, env=env, start_new_session=True)
        log.info("service %s started, pid %d: %s", name, proc.pid, argv)
        return proc

    async def _await_port(self, name: str, port: int, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        proc = self._procs[name]
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                raise ServiceFailed("service %s exited with %s before opening port %d; see %s"
                                    % (name, proc.returncode, port, self._log_path(name)))
            if await _port_open(port):
                return
            await asyncio.sleep(0.1)
        raise ServiceFailed("service %s did not open port %d within %.0f s" % (name, port, timeout))

    def _log_path(self, name: str) -> str:
        return os.path.join(self._log_dir, name + ".log")

    async def shutdown(self, name: str) -> None:
        proc = self._procs.pop(name, None)
        if proc is None or proc.poll() is not None:
            return
        _signal_group(proc, signal.SIGTERM)
        loop = asyncio.get_running_loop()
        try:
            await asyncio.wait_for(loop.run_in_executor(None, proc.wait), STOP_GRACE)
        except asyncio.TimeoutError:
            _signal_group(proc, signal.SIGKILL)
            await loop.run_in_executor(None, proc.wait)
        log.info("service %s stopped", name)

    def _stop_now(self, name: str) -> None:
        proc = self._procs.pop(name, None)
        if proc is not None and proc.poll() is None:
            _signal_group(proc, signal.SIGKILL)
            proc.wait()

    async def shutdown_all(self) -> None:
        for name in list(self._procs):
            await self.shutdown(name)


def _signal_group(proc: subprocess.Popen[bytes], sig: int) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, sig)


async def _port_open(port: int) -> bool:
    try:
        _, writer = await asyncio.wait_for(asyncio.open_connection("127.0.0.1", port), 1.0)
    except (OSError, asyncio.TimeoutError):
        return False
    writer.close()
    return True
