"""Log shipping to Loki's push API, and a JSON log formatter.

``LokiHandler`` never blocks the caller: ``emit`` puts the formatted record on a bounded
queue (dropping, and counting, when it is full) and a daemon thread batches records into
``POST {url}/loki/api/v1/push`` bodies::

    {"streams": [{"stream": {"agent_id", "kernel_id", "level", "source"},
                  "values": [[ns, line], ...]}]}

One stream per label set in a batch. A record's ``kernel_id`` is the kernel its work is about,
bound per RPC request and lifecycle step by :mod:`berth.logctx` (or given with
``extra={"kernel_id": ...}``); records about no kernel use ``""``. ``source`` is ``agent`` for
the agent's records and ``container`` for a kernel's container output
(:class:`ContainerOutputShipper`). The session and RPC method are in the line (the JSON
formatter prints every context field), not labels: they would multiply the streams. Delivery
failures are counted and the batch is discarded (logging about logging would loop). Stdlib only
(urllib) so the thread needs no event loop.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import queue
import threading
import time
import urllib.request
from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from typing import Any

_STOP = object()
_RESERVED = set(vars(logging.LogRecord("", 0, "", 0, "", None, None))) | {"message", "asctime"}


class JsonFormatter(logging.Formatter):
    """One JSON object per line: time, level, logger, message, exception, and any extras."""

    def format(self, record: logging.LogRecord) -> str:
        out: dict[str, Any] = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(),
            "level": record.levelname, "logger": record.name, "message": record.getMessage(),
        }
        if record.exc_info:
            out["exception"] = self.formatException(record.exc_info)
        for key, value in vars(record).items():
            if key not in _RESERVED and not key.startswith("_"):
                out[key] = value if isinstance(value, str | int | float | bool) else repr(value)
        return json.dumps(out, ensure_ascii=False)


Labels = tuple[tuple[str, str], ...]
Entry = tuple[int, Labels, str]  # (unix ns, stream labels besides agent_id, line)


def build_push_body(agent_id: str, entries: list[Entry]) -> dict[str, Any]:
    """Entries → Loki push body, one stream per distinct label set."""
    streams: dict[Labels, list[list[str]]] = {}
    for ns, labels, line in entries:
        streams.setdefault(labels, []).append([str(ns), line])
    return {"streams": [{"stream": {"agent_id": agent_id, **dict(labels)}, "values": values}
                        for labels, values in streams.items()]}


def record_labels(record: logging.LogRecord) -> Labels:
    """An agent log record's stream: its kernel (bound by :mod:`berth.logctx`) and level."""
    kernel_id = str(getattr(record, "kernel_id", "") or "")
    return (("kernel_id", kernel_id), ("level", record.levelname.lower()), ("source", "agent"))


class LokiPusher:
    """A bounded queue drained by a daemon thread into batched pushes; ``put`` never blocks."""

    def __init__(self, url: str, agent_id: str, *, batch_size: int = 200,
                 flush_interval: float = 1.0, queue_size: int = 10000, timeout: float = 5.0,
                 headers: Mapping[str, str] | None = None) -> None:
        self.push_url = url.rstrip("/") + "/loki/api/v1/push"
        self.agent_id = agent_id
        self.batch_size = batch_size
        self.flush_interval = flush_interval
        self.timeout = timeout
        self._headers = {"Content-Type": "application/json", **(headers or {})}
        self._queue: queue.Queue[Any] = queue.Queue(queue_size)
        self.dropped = 0
        self.failed_batches = 0
        self.sent = 0
        self._thread = threading.Thread(target=self._run, name="loki-shipper", daemon=True)
        self._thread.start()

    def put(self, entry: Entry) -> None:
        try:
            self._queue.put_nowait(entry)
        except queue.Full:
            self.dropped += 1

    def _run(self) -> None:
        stopping = False
        while not stopping:
            batch, stopping = self._collect()
            if batch:
                self._push(batch)

    def _collect(self) -> tuple[list[Entry], bool]:
        batch: list[Entry] = []
        deadline = time.monotonic() + self.flush_interval
        while len(batch) < self.batch_size:
            try:
                item = self._queue.get(timeout=max(0.0, deadline - time.monotonic()))
            except queue.Empty:
                break
            if item is _STOP:
                return batch, True
            batch.append(item)
        return batch, False

    def _push(self, batch: list[Entry]) -> None:
        body = json.dumps(build_push_body(self.agent_id, batch)).encode()
        req = urllib.request.Request(self.push_url, data=body, headers=self._headers,
                                     method="POST")
        try:
            with urllib.request.urlopen(req, timeout=self.timeout) as resp:
                resp.read()
            self.sent += len(batch)
        except OSError:
            self.failed_batches += 1

    def close(self) -> None:
        """Flush what is queued (bounded by ``timeout``) and stop the thread (blocking)."""
        if self._thread.is_alive():
            with contextlib.suppress(queue.Full):
                self._queue.put(_STOP, timeout=self.timeout)
            self._thread.join(self.timeout + self.flush_interval)


class LokiHandler(logging.Handler):
    """The agent's own log records, labelled with the kernel they are about."""

    def __init__(self, url: str, agent_id: str, *, level: int = logging.NOTSET,
                 **pusher: Any) -> None:
        super().__init__(level)
        self.pusher = LokiPusher(url, agent_id, **pusher)

    @property
    def push_url(self) -> str:
        return self.pusher.push_url

    @property
    def dropped(self) -> int:
        return self.pusher.dropped

    @property
    def failed_batches(self) -> int:
        return self.pusher.failed_batches

    @property
    def sent(self) -> int:
        return self.pusher.sent

    def emit(self, record: logging.LogRecord) -> None:
        try:
            self.pusher.put((int(record.created * 1e9), record_labels(record),
                             self.format(record)))
        except Exception:  # noqa: BLE001 - logging.Handler contract: never raise from emit
            self.handleError(record)

    def close(self) -> None:
        self.pusher.close()
        super().close()


class ContainerOutputShipper:
    """A kernel's container output (its last lines before removal) to Loki, one stream per
    kernel labelled ``source="container"``; the lifecycle's log sink when Loki is configured."""

    def __init__(self, url: str, agent_id: str, *, queue_size: int = 20000,
                 clock: Callable[[], float] = time.time, **pusher: Any) -> None:
        self.pusher = LokiPusher(url, agent_id, queue_size=queue_size, **pusher)
        self._clock = clock

    async def ship(self, kernel_id: str, container_id: str, logs: str) -> None:
        labels: Labels = (("kernel_id", kernel_id), ("level", "info"), ("source", "container"))
        start = int(self._clock() * 1e9)
        for index, line in enumerate(logs.splitlines()):
            self.pusher.put((start + index, labels, line))

    async def close(self) -> None:
        await asyncio.to_thread(self.pusher.close)


JSONFormatter = JsonFormatter
"""Alias kept for callers that spell it in capitals (berth.daemon.server)."""
