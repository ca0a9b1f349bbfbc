"""A run's bounded output queue and the pumps that fill it from pipes (runner side, stdlib only).

Backpressure: when a run holds more than HIGH_WATER characters nobody has collected, the pumps
stop reading the producer's pipes, so the producer blocks on write; collecting below
LOW_WATER resumes them. The runner never holds more than about HIGH_WATER per run plus one
pipe's worth, whatever the program prints.
"""

from __future__ import annotations

import asyncio
import codecs
import contextlib
import os
from collections import deque
from typing import Any, Callable

from . import protocol

HIGH_WATER = 4 * 1024 * 1024
LOW_WATER = 1024 * 1024
MERGE_LIMIT = 256 * 1024
READ_SIZE = 65536
STATUS = "status"
FINAL_STATUSES = (protocol.ST_FINISHED, protocol.ST_EXEC_TIMEOUT)


class Run:
    """One execution (query or batch) and the records it produced but nobody collected yet."""

    def __init__(self, run_id: str, mode: str, code: str, opts: dict[str, Any]) -> None:
        self.run_id = run_id
        self.mode = mode
        self.code = code
        self.opts = opts
        self.timed_out = False
        self.worker_exit: dict[str, Any] | None = None  # set when the interpreter died in it
        self.done = asyncio.Event()
        self._records: deque[list[Any]] = deque()
        self._pending = 0
        self._sticky: dict[str, Any] | None = None
        self._changed = asyncio.Event()
        self._flow: list[OutputRouter] = []

    # producer side ---------------------------------------------------------------------------
    @property
    def over_high_water(self) -> bool:
        return self._pending > HIGH_WATER

    def attach(self, router: OutputRouter) -> None:
        self._flow.append(router)

    def detach(self, router: OutputRouter) -> None:
        if router in self._flow:
            self._flow.remove(router)

    def push(self, kind: str, data: Any) -> None:
        last = self._records[-1] if self._records else None
        mergeable = kind in (protocol.REC_STDOUT, protocol.REC_STDERR)
        if mergeable and last is not None and last[0] == kind and len(last[1]) < MERGE_LIMIT:
            last[1] += data
        else:
            self._records.append([kind, data])
        self._pending += len(data) if isinstance(data, str) else 256
        self._changed.set()

    def push_status(self, status: str, exit_code: int | None = None,
                    options: dict[str, Any] | None = None, sticky: bool = False) -> None:
        record = {"status": status, "exitCode": exit_code, "options": options}
        self._records.append([STATUS, record])
        if sticky:
            self._sticky = record
        self._changed.set()

    def clear_waiting(self) -> None:
        if self._sticky is not None and self._sticky["status"] == protocol.ST_WAITING_INPUT:
            self._sticky = None

    @property
    def waiting_input(self) -> bool:
        return self._sticky is not None and self._sticky["status"] == protocol.ST_WAITING_INPUT

    def finish(self, exit_code: int | None) -> None:
        if self.done.is_set():
            return
        status = protocol.ST_EXEC_TIMEOUT if self.timed_out else protocol.ST_FINISHED
        self.push_status(status, exit_code, sticky=True)
        self.done.set()

    # consumer side ---------------------------------------------------------------------------
    def _take(self, out: list[list[Any]], size: int, limit: int) -> tuple[int, dict[str, Any] | None]:
        while self._records and size < limit:
            kind, data = self._records.popleft()
            if kind == STATUS:
                return size, data
            out.append([kind, data])
            n = len(data) if isinstance(data, str) else 256
            size += n
            self._pending -= n
        if self._pending < LOW_WATER:
            for router in list(self._flow):
                router.resume()
        if not self._records and self._sticky is not None:
            return size, self._sticky
        return size, None

    async def collect(self, flush_timeout: float | None, max_chars: int) -> dict[str, Any]:
        """Gather records until a status, `max_chars` of output, or `flush_timeout` seconds."""
        loop = asyncio.get_running_loop()
        deadline = None if flush_timeout is None else loop.time() + max(0.0, flush_timeout)
        records: list[list[Any]] = []
        size, final = 0, None
        while True:
            size, final = self._take(records, size, max_chars)
            if final is not None or size >= max_chars:
                break
            remaining = None if deadline is None else deadline - loop.time()
            if remaining is not None and remaining <= 0:
                break
            self._changed.clear()
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(self._changed.wait(), remaining)
        return self._reply(records, final)

    def _reply(self, records: list[list[Any]], final: dict[str, Any] | None) -> dict[str, Any]:
        reply: dict[str, Any] = {"runId": self.run_id, "status": protocol.ST_CONTINUED,
                                 "exitCode": None, "options": None, "records": records}
        if final is not None:
            reply.update(final)
            if self.worker_exit is not None:
                reply["workerExit"] = self.worker_exit
        return reply


class FdPump:
    """Reads a non-blocking pipe fd through the event loop; can pause and drain synchronously."""

    def __init__(self, fd: int, on_data: Callable[[bytes], None], on_eof: Callable[[], None]) -> None:
        self.fd = fd
        self._on_data = on_data
        self._on_eof = on_eof
        self._loop = asyncio.get_running_loop()
        self._paused = False
        self.closed = False
        os.set_blocking(fd, False)
        self._loop.add_reader(fd, self._readable)

    def _readable(self) -> None:
        self.read_once()

    def read_once(self) -> int:
        """Read one chunk; returns bytes read, 0 when the pipe is empty or closed."""
        if self.closed:
            return 0
        try:
            data = os.read(self.fd, READ_SIZE)
        except BlockingIOError:
            return 0
        except OSError:
            data = b""
        if not data:
            self.close()
            self._on_eof()
            return 0
        self._on_data(data)
        return len(data)

    def pause(self) -> None:
        if not self._paused and not self.closed:
            self._paused = True
            self._loop.remove_reader(self.fd)

    def resume(self) -> None:
        if self._paused and not self.closed:
            self._paused = False
            self._loop.add_reader(self.fd, self._readable)

    def close(self) -> None:
        if self.closed:
            return
        self.closed = True
        if not self._paused:
            self._loop.remove_reader(self.fd)
        os.close(self.fd)


class OutputRouter:
    """stdout/stderr pipes of one process, decoded as UTF-8 and routed into the current run."""

    def __init__(self, stdout_fd: int, stderr_fd: int, on_eof: Callable[[], None]) -> None:
        self.sink: Run | None = None
        self._eof_cb = on_eof
        self._decoders = {k: codecs.getincrementaldecoder("utf-8")("replace")
                          for k in (protocol.REC_STDOUT, protocol.REC_STDERR)}
        self._pumps = [
            FdPump(stdout_fd, lambda d: self._data(protocol.REC_STDOUT, d), self._eof),
            FdPump(stderr_fd, lambda d: self._data(protocol.REC_STDERR, d), self._eof),
        ]

    @property
    def at_eof(self) -> bool:
        return all(p.closed for p in self._pumps)

    def route_to(self, run: Run | None) -> None:
        if self.sink is not None:
            self.sink.detach(self)
        self.sink = run
        if run is not None:
            run.attach(self)
        self.resume()

    def _data(self, kind: str, data: bytes) -> None:
        text = self._decoders[kind].decode(data)
        if text and self.sink is not None:
            self.sink.push(kind, text)
            if self.sink.over_high_water:
                for pump in self._pumps:
                    pump.pause()

    def _eof(self) -> None:
        if self.at_eof:
            self._eof_cb()

    def resume(self) -> None:
        for pump in self._pumps:
            pump.resume()

    def drain(self, limit: int = 1024 * 1024) -> None:
        """Synchronously read what is already in the pipes (bounded), keeping output order."""
        total = 0
        progress = True
        while progress and total < limit:
            progress = False
            for pump in self._pumps:
                n = pump.read_once()
                total += n
                progress = progress or n > 0

    def close(self) -> None:
        self.route_to(None)
        for pump in self._pumps:
            pump.close()
