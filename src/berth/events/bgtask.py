"""Background tasks: an id at once, progress and completion as ``bgtask_*`` events (ref §9).

``BackgroundTaskManager.start(fn, name)`` runs ``fn(reporter)`` in a task the manager owns and
returns its id immediately.  ``fn`` reports progress through ``ProgressReporter`` and returns a
message (``bgtask_done``), a ``PartialSuccess`` (``bgtask_partial_success``) or raises
(``bgtask_failed`` with the error's text).  Cancellation gives ``bgtask_cancelled``;
``shutdown()`` cancels whatever is still running.
"""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

from berth.events.emitter import EventEmitter
from berth.events.models import (
    BgtaskCancelledEvent,
    BgtaskDoneEvent,
    BgtaskFailedEvent,
    BgtaskPartialSuccessEvent,
    BgtaskUpdatedEvent,
)

log = logging.getLogger(__name__)


class TaskStatus(StrEnum):
    RUNNING = "running"
    DONE = "done"
    PARTIAL_SUCCESS = "partial_success"
    FAILED = "failed"
    CANCELLED = "cancelled"


@dataclass(frozen=True)
class PartialSuccess:
    """Return this from a task that finished but with per-item errors."""

    message: str
    errors: list[str] = field(default_factory=list)


TaskResult = str | PartialSuccess | None
TaskFn = Callable[["ProgressReporter"], Awaitable[TaskResult]]


class ProgressReporter:
    """Emits ``bgtask_updated``; throttled to one event per ``min_interval`` except the last."""

    def __init__(self, emitter: EventEmitter, task_id: str, total: float = 0,
                 min_interval: float = 0.2, record: TaskRecord | None = None) -> None:
        self.task_id = task_id
        self.record = record  # kept current for get_status (the CLI follows it there)
        self.current = 0.0
        self.total = float(total)
        self._emitter = emitter
        self._min_interval = min_interval
        self._last_emit = 0.0
        self.emitted = 0

    def update(self, increment: float = 1, message: str | None = None) -> None:
        self.set(self.current + increment, self.total, message)

    def set(self, current: float, total: float | None = None, message: str | None = None) -> None:
        """Absolute progress (e.g. bytes pulled so far of ``total``)."""
        self.current = float(current)
        if total is not None:
            self.total = float(total)
        if self.record is not None:
            self.record.current, self.record.total = self.current, self.total
            if message is not None:
                self.record.progress_message = message
        now = time.monotonic()
        complete = self.total > 0 and self.current >= self.total
        if complete or message is not None or now - self._last_emit >= self._min_interval:
            self._emit(message)
            self._last_emit = now

    def _emit(self, message: str | None) -> None:
        self._emitter.emit(BgtaskUpdatedEvent(
            task_id=self.task_id, message=message, current_progress=self.current,
            total_progress=self.total))
        self.emitted += 1


@dataclass
class TaskRecord:
    task_id: str
    name: str
    status: TaskStatus = TaskStatus.RUNNING
    message: str | None = None
    current: float = 0.0
    total: float = 0.0
    progress_message: str | None = None

    def to_json(self) -> dict[str, Any]:
        return {"task_id": self.task_id, "name": self.name, "status": str(self.status),
                "message": self.message if self.status is not TaskStatus.RUNNING
                else self.progress_message, "current": self.current, "total": self.total}


class BackgroundTaskManager:
    """Records of ended tasks are kept for the newest ``keep_finished`` only (the outcome
    went out as an event; the record is for :meth:`wait` and the CLI), so they do not pile
    up over the agent's life."""

    def __init__(self, event_bus: EventEmitter, *, progress_interval: float = 0.2,
                 keep_finished: int = 256) -> None:
        self._emitter = event_bus
        self._progress_interval = progress_interval
        self._keep_finished = keep_finished
        self._tasks: dict[str, asyncio.Task[None]] = {}
        self.records: dict[str, TaskRecord] = {}  # insertion order: oldest first

    def start(self, fn: TaskFn, name: str | None = None) -> str:
        """Schedule ``fn(reporter)``; return the task id (a UUID string) at once."""
        task_id = str(uuid.uuid4())
        self._prune_records()
        self.records[task_id] = TaskRecord(task_id, name or str(getattr(fn, "__name__", "task")))
        reporter = ProgressReporter(self._emitter, task_id, min_interval=self._progress_interval,
                                    record=self.records[task_id])
        self._emitter.emit(BgtaskUpdatedEvent(task_id=task_id, message="Task started",
                                              current_progress=0, total_progress=0))
        task = asyncio.create_task(self._run(fn, reporter), name=f"bgtask:{task_id}")
        self._tasks[task_id] = task
        task.add_done_callback(lambda _t: self._tasks.pop(task_id, None))
        log.info("bgtask %s started (%s)", task_id, self.records[task_id].name)
        return task_id

    async def _run(self, fn: TaskFn, reporter: ProgressReporter) -> None:
        tid = reporter.task_id
        try:
            result = await fn(reporter)
        except asyncio.CancelledError:
            self._finish(tid, TaskStatus.CANCELLED, "cancelled")
            self._emitter.emit(BgtaskCancelledEvent(task_id=tid, message="cancelled"))
            raise
        except Exception as exc:  # noqa: BLE001 - any failure of the job is its reported outcome
            self._finish(tid, TaskStatus.FAILED, repr(exc))
            self._emitter.emit(BgtaskFailedEvent(task_id=tid, message=repr(exc)))
            log.warning("bgtask %s failed: %r", tid, exc)
            return
        self._complete(tid, result)

    def _complete(self, tid: str, result: TaskResult) -> None:
        if isinstance(result, PartialSuccess):
            self._finish(tid, TaskStatus.PARTIAL_SUCCESS, result.message)
            self._emitter.emit(BgtaskPartialSuccessEvent(
                task_id=tid, message=result.message, errors=result.errors))
            return
        self._finish(tid, TaskStatus.DONE, result)
        self._emitter.emit(BgtaskDoneEvent(task_id=tid, message=result))

    def _finish(self, tid: str, status: TaskStatus, message: str | None) -> None:
        rec = self.records[tid]
        rec.status, rec.message = status, message
        log.info("bgtask %s %s", tid, status.value)

    def _prune_records(self) -> None:
        ended = [tid for tid, rec in self.records.items() if rec.status is not TaskStatus.RUNNING]
        for tid in ended[:max(0, len(ended) - self._keep_finished)]:
            del self.records[tid]

    def snapshot(self) -> dict[str, dict[str, Any]]:
        """``{task_id: record}`` of the running and recently ended tasks (``get_status``)."""
        return {tid: rec.to_json() for tid, rec in self.records.items()}

    @property
    def running(self) -> list[str]:
        return list(self._tasks)

    async def wait(self, task_id: str, timeout: float | None = None) -> TaskRecord:
        """Wait for a task to end (whatever the outcome) and return its record."""
        record = self.records[task_id]
        task = self._tasks.get(task_id)
        if task is not None:
            await asyncio.wait([task], timeout=timeout)
        return record

    def cancel(self, task_id: str) -> bool:
        task = self._tasks.get(task_id)
        return task.cancel() if task is not None else False

    async def shutdown(self, timeout: float = 5.0) -> None:
        """Cancel every running task and wait (bounded) for them to end."""
        tasks = list(self._tasks.values())
        for t in tasks:
            t.cancel()
        if tasks:
            await asyncio.wait(tasks, timeout=timeout)
