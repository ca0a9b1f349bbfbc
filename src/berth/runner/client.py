"""Agent side of the runner socket: `RunnerClient` (asyncio, one multiplexed connection).

The client connects lazily and reconnects after a failure, so an agent restart or a runner
that is still starting is only a retry away. Requests carry ids; several may be in flight on
the one connection (an `interrupt` while an `execute` waits for output).

The socket lives in the kernel's scratch, where the kernel's user may have put a link in its
place. The client never connects by name: it pins the socket inode with an
``O_PATH | O_NOFOLLOW`` descriptor, checks that it is a socket (not a link, not another file),
and connects through ``/proc/self/fd/N`` -- so what it reaches is the inode it checked, even if
the name is swapped in between (see storage.nofollow). The path is never longer than sun_path.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import os
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from types import TracebackType
from typing import Any, Self

from berth.errors import RunnerError, RunnerUnavailable
from berth.runner.kernel_side import protocol
from berth.runner.results import next_result
from berth.storage import open_socket

log = logging.getLogger(__name__)

REPLY_MARGIN = 30.0
POLL_INTERVAL = 0.1


class _Connection:
    """One open socket with a reader task that resolves replies by request id."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._reader = reader
        self._writer = writer
        self._pending: dict[int, asyncio.Future[dict[str, Any]]] = {}
        self._ids = itertools.count(1)
        self._task = asyncio.get_running_loop().create_task(self._read_loop())
        self.broken = False

    async def _read_loop(self) -> None:
        decoder = protocol.FrameDecoder()
        error: Exception = RunnerUnavailable("runner closed the connection")
        try:
            while data := await self._reader.read(65536):
                for reply in decoder.feed(data):
                    fut = self._pending.pop(reply.get("id", -1), None)
                    if fut is not None and not fut.done():
                        fut.set_result(reply)
        except (OSError, protocol.FrameError) as exc:
            error = RunnerUnavailable(f"runner connection failed: {exc}")
        finally:
            self._fail_all(error)

    def _fail_all(self, error: Exception) -> None:
        self.broken = True
        for fut in self._pending.values():
            if not fut.done():
                fut.set_exception(error)
        self._pending.clear()

    async def request(self, message: dict[str, Any], timeout: float | None) -> dict[str, Any]:
        request_id = next(self._ids)
        fut: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()
        self._pending[request_id] = fut
        try:
            self._writer.write(protocol.encode_frame({**message, "id": request_id}))
            await self._writer.drain()
        except OSError as exc:
            self._pending.pop(request_id, None)
            self.broken = True
            raise RunnerUnavailable(f"cannot send to runner: {exc}") from exc
        try:
            return await asyncio.wait_for(fut, timeout)
        except TimeoutError:
            self._pending.pop(request_id, None)
            raise RunnerUnavailable(f"runner did not answer {message['op']} in {timeout} s",
                                    op=message["op"]) from None

    async def close(self) -> None:
        self.broken = True
        self._task.cancel()
        self._writer.close()
        with contextlib.suppress(OSError):
            await self._writer.wait_closed()
        with contextlib.suppress(asyncio.CancelledError):
            await self._task


async def _open_unix(path: Path) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    """Connect to the socket inode named `path`, refusing a link or a non-socket there."""
    dir_fd = os.open(path.parent, os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        sock_fd = open_socket(dir_fd, path.name)
    finally:
        os.close(dir_fd)
    try:
        return await asyncio.open_unix_connection(f"/proc/self/fd/{sock_fd}")
    finally:
        os.close(sock_fd)


class RunnerClient:
    """Talks to one kernel's runner at `socket_path` (host path of `runner.sock`)."""

    def __init__(self, socket_path: str | Path, *, connect_timeout: float = 5.0,
                 request_timeout: float = 60.0, max_reply_chars: int = 1024 * 1024) -> None:
        self.socket_path = str(socket_path)
        self._connect_timeout = connect_timeout
        self._request_timeout = request_timeout
        self._max_reply_chars = max_reply_chars
        self._conn: _Connection | None = None
        self._lock = asyncio.Lock()

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(self, exc_type: type[BaseException] | None,
                        exc: BaseException | None, tb: TracebackType | None) -> None:
        await self.close()

    async def close(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            await conn.close()

    async def _connection(self) -> _Connection:
        async with self._lock:
            if self._conn is not None and not self._conn.broken:
                return self._conn
            if self._conn is not None:
                await self._conn.close()
                self._conn = None
            try:
                reader, writer = await asyncio.wait_for(
                    _open_unix(Path(self.socket_path)), self._connect_timeout)
            except (OSError, TimeoutError) as exc:
                raise RunnerUnavailable(f"cannot connect to runner at {self.socket_path}: {exc}",
                                        socket_path=self.socket_path) from exc
            self._conn = _Connection(reader, writer)
            return self._conn

    async def _request(self, op: str, timeout: float | None, *, retry: bool = False,
                       **args: Any) -> dict[str, Any]:
        attempts = 2 if retry else 1
        for attempt in range(attempts):
            conn = await self._connection()
            try:
                reply = await conn.request({"op": op, **args}, timeout)
                break
            except RunnerUnavailable:
                if attempt + 1 == attempts:
                    raise
        if not reply.get("ok"):
            error = reply.get("error") or {}
            raise RunnerError(f"runner refused {op}: {error.get('type')}: {error.get('message')}",
                              op=op, error_type=error.get("type"))
        result: dict[str, Any] = reply.get("result") or {}
        return result

    # public API ------------------------------------------------------------------------------
    async def status(self) -> dict[str, Any]:
        """{ready, started_at, bootstrap_exit, python, pid, current_run}"""
        return await self._request(protocol.OP_STATUS, self._request_timeout, retry=True)

    async def probe_ready(self) -> bool:
        """One ``status`` request: whether the runner says it is ready (False while it cannot
        be reached yet). The agent asks this when the runner's ready signal wakes it."""
        try:
            status = await self._request(protocol.OP_STATUS, self._connect_timeout)
        except (RunnerUnavailable, RunnerError):
            return False
        return bool(status.get("ready"))

    async def wait_ready(self, deadline: float) -> dict[str, Any]:
        """Poll until the runner says ready; `deadline` is a `time.monotonic()` instant."""
        last_error: Exception | None = None
        while time.monotonic() < deadline:
            try:
                status = await self.status()
                if status.get("ready"):
                    return status
                last_error = None
            except RunnerUnavailable as exc:
                last_error = exc
            await asyncio.sleep(POLL_INTERVAL)
        raise RunnerUnavailable(f"runner at {self.socket_path} not ready before the deadline"
                                + (f": {last_error}" if last_error else " (still bootstrapping)"),
                                socket_path=self.socket_path)

    async def execute(self, run_id: str | None, mode: str, code: str,
                      opts: Mapping[str, Any] | None = None, flush_timeout: float | None = None,
                      api_version: int = 2) -> dict[str, Any]:
        """Backend.AI's `execute`: returns NextResult (runId, status, exitCode, options, files,
        and console for api_version >= 2 or stdout/stderr/media/html for 1)."""
        timeout = None if flush_timeout is None else flush_timeout + REPLY_MARGIN
        reply = await self._request(
            protocol.OP_EXECUTE, timeout, run_id=run_id, mode=mode, code=code,
            opts=dict(opts or {}), flush_timeout=flush_timeout, max_chars=self._max_reply_chars)
        return next_result(reply, api_version)

    async def complete(self, text: str, opts: Mapping[str, Any] | None = None) -> dict[str, Any]:
        """`get_completions` result: {status, error, suggestions}."""
        try:
            reply = await self._request(protocol.OP_COMPLETE, self._request_timeout, retry=True,
                                        text=text, opts=dict(opts or {}))
        except RunnerUnavailable:
            raise
        except RunnerError as exc:
            return {"status": "failed", "error": str(exc), "suggestions": []}
        return {"status": "finished", "error": None, "suggestions": list(reply["suggestions"])}

    async def interrupt(self) -> None:
        await self._request(protocol.OP_INTERRUPT, self._request_timeout, retry=True)

    async def start_service(self, name: str, opts: Mapping[str, Any] | None = None,
                            ports: Sequence[int] = (), *, protocol_name: str = "tcp",
                            timeout: float = 30.0) -> dict[str, Any]:
        """{status: started|running|failed, error?}; `ports` are the container ports."""
        return await self._request(
            protocol.OP_START_SERVICE, timeout + REPLY_MARGIN, name=name,
            protocol=protocol_name, ports=list(ports), options=dict(opts or {}),
            launch_timeout=timeout)

    async def claim(self, environ: Mapping[str, str], unset: Sequence[str] = ()) -> dict[str, Any]:
        """Make a warm-pool runner the kernel's (its environment); {ready}."""
        return await self._request(protocol.OP_CLAIM, self._request_timeout,
                                   environ=dict(environ), unset=list(unset))

    async def shutdown_service(self, name: str) -> None:
        await self._request(protocol.OP_SHUTDOWN_SERVICE, self._request_timeout, name=name)
