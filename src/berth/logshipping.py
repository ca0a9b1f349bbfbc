"""Log shipping to Loki's push API, and a JSON log formatter.

``LokiHandler`` never blocks the caller: ``emit`` puts the formatted record on a bounded
queue (dropping, and counting, when it is full) and a daemon thread batches records into
``POST {url}/loki/api/v1/push`` bodies::

    {"streams": [{"stream": {"agent_id", "kernel_id", "level"}, "values": [[ns, line], ...]}]}

One stream per (kernel_id, level) in a batch.  A record's ``kernel_id`` comes from its
``extra={"kernel_id": ...}``; records without one use ``""``.  Delivery failures are counted
and the batch is discarded (logging about logging would loop).  Stdlib only (urllib) so the
thread needs no event loop.
"""

from __future__ import annotations

import json
import logging
import queue
import threading
import time
import urllib.request
from collections.abc import Mapping
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


def build_push_body(agent_id: str, entries: list[tuple[int, str, str, str]]) -> dict[str, Any]:
    """entries: ``(ns, kernel_id, level, line)`` → Loki push body grouped by labels."""
    streams: dict[tuple[str, str], list[list[str]]] = {}
    for ns, kernel_id, level, line in entries:
        streams.setdefault((kernel_id, level), []).append([str(ns), line])
    return {"streams": [
        {"stream": {"agent_id": agent_id, "kernel_id": k, "level": lvl}, "values": values}
        for (k, lvl), values in streams.items()]}


class LokiHandler(logging.Handler):
    def __init__(self, url: str, agent_id: str, *, batch_size: int = 200,
                 flush_interval: float = 1.0, queue_size: int = 10000, timeout: float = 5.0,
                 headers: Mapping[str, str] | None = None, level: int = logging.NOTSET) -> None:
        super().__init__(level)
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

    def emit(self, record: logging.LogRecord) -> None:
        try:
            entry = (int(record.created * 1e9), str(getattr(record, "kernel_id", "") or ""), record.levelname.lower(),
                     self.format(record))
            self._queue.put_nowait(entry)
        except queue.Full:
            self.dropped += 1
        except Exception:  # noqa: BLE001 - logging.Handler contract: never raise from emit
            self.handleError(record)

    def _run(self) -> None:
        stopping = False
        while not stopping:
            batch, stopping = self._collect()
            if batch:
                self._push(batch)

    def _collect(self) -> tuple[list[tuple[int, str, str, str]], bool]:
        batch: list[tuple[int, str, str, str]] = []
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

    def _push(self, batch: list[tuple[int, str, str, str]]) -> None:
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
        """Flush what is queued (bounded by ``timeout``) and stop the thread."""
        if self._thread.is_alive():
            try:
                self._queue.put(_STOP, timeout=self.timeout)
            except queue.Full:
                pass
            self._thread.join(self.timeout + self.flush_interval)
        super().close()


JSONFormatter = JsonFormatter
"""Alias kept for callers that spell it in capitals (berth.server)."""
