from __future__ import annotations

import asyncio

from berth.events import (
    BgtaskCancelledEvent,
    BgtaskDoneEvent,
    BgtaskFailedEvent,
    BgtaskPartialSuccessEvent,
    BgtaskUpdatedEvent,
    RecordingEmitter,
)
from berth.events.bgtask import BackgroundTaskManager, PartialSuccess, ProgressReporter, TaskStatus


async def test_start_returns_id_at_once_then_progress_then_done() -> None:
    em = RecordingEmitter()
    mgr = BackgroundTaskManager(em, progress_interval=0)
    gate = asyncio.Event()

    async def job(r: ProgressReporter) -> str:
        await gate.wait()
        r.set(0, 3)
        for _ in range(3):
            r.update(1)
        return "all good"

    tid = mgr.start(job, "job")
    assert mgr.running == [tid] and mgr.records[tid].status is TaskStatus.RUNNING
    gate.set()
    rec = await mgr.wait(tid, 1)
    assert rec.status is TaskStatus.DONE and rec.message == "all good"
    assert em.names() == ["bgtask_updated"] * 5 + ["bgtask_done"]
    updates = [e for e in em.events if isinstance(e, BgtaskUpdatedEvent)]
    assert updates[0].message == "Task started"
    assert [u.current_progress for u in updates[1:]] == [0, 1, 2, 3]
    assert all(u.total_progress == 3 for u in updates[1:])
    assert all(e.task_id == tid for e in em.events)  # type: ignore[attr-defined]
    assert mgr.running == []


async def test_failure_carries_reason() -> None:
    em = RecordingEmitter()
    mgr = BackgroundTaskManager(em)

    async def job(r: ProgressReporter) -> None:
        raise RuntimeError("manifest unknown")

    rec = await mgr.wait(mgr.start(job), 1)
    assert rec.status is TaskStatus.FAILED
    last = em.events[-1]
    assert isinstance(last, BgtaskFailedEvent) and "manifest unknown" in (last.message or "")


async def test_partial_success() -> None:
    em = RecordingEmitter()
    mgr = BackgroundTaskManager(em)

    async def job(r: ProgressReporter) -> PartialSuccess:
        return PartialSuccess("2 of 3", ["x: in use"])

    await mgr.wait(mgr.start(job), 1)
    last = em.events[-1]
    assert isinstance(last, BgtaskPartialSuccessEvent) and last.errors == ["x: in use"]


async def test_shutdown_cancels_running_tasks() -> None:
    em = RecordingEmitter()
    mgr = BackgroundTaskManager(em)

    async def forever(r: ProgressReporter) -> None:
        await asyncio.sleep(3600)

    ids = [mgr.start(forever) for _ in range(3)]
    await asyncio.sleep(0)
    await mgr.shutdown(1)
    assert mgr.running == []
    assert all(mgr.records[i].status is TaskStatus.CANCELLED for i in ids)
    assert sum(isinstance(e, BgtaskCancelledEvent) for e in em.events) == 3


async def test_progress_is_throttled_but_completion_always_reported() -> None:
    em = RecordingEmitter()
    r = ProgressReporter(em, "t", total=1000, min_interval=60)
    for i in range(1, 1001):
        r.set(i)
    # first call emits (never emitted before), the final one because it completes
    assert [e.current_progress for e in em.events] == [1, 1000]  # type: ignore[attr-defined]


async def test_done_with_no_message() -> None:
    em = RecordingEmitter()
    mgr = BackgroundTaskManager(em)

    async def job(r: ProgressReporter) -> None:
        return None

    await mgr.wait(mgr.start(job), 1)
    assert isinstance(em.events[-1], BgtaskDoneEvent)


async def test_finished_records_are_bounded_running_ones_kept() -> None:
    mgr = BackgroundTaskManager(RecordingEmitter(), keep_finished=5)
    gate = asyncio.Event()

    async def blocked(r: ProgressReporter) -> str:
        await gate.wait()
        return "late"

    async def quick(r: ProgressReporter) -> str:
        return "ok"

    running = mgr.start(blocked, "blocked")
    done = []
    for _ in range(20):
        tid = mgr.start(quick, "quick")
        assert (await mgr.wait(tid, 1)).status is TaskStatus.DONE
        done.append(tid)
    assert running in mgr.records  # a running task's record is never dropped
    # pruned as each task starts: the newest 5 ended ones then, plus the last one started
    assert [t for t in mgr.records if t != running] == done[-6:]
    gate.set()
    assert (await mgr.wait(running, 1)).message == "late"
