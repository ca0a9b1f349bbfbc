"""The agent's Docker event watcher over the fake engine: it survives its stream ending or
failing with any error, waits until the engine answers, subscribes again and runs one sync pass
(deaths whose events were lost meanwhile), and goes on delivering events."""

from __future__ import annotations

import asyncio
import random
from collections.abc import AsyncIterator
from typing import Any

import pytest

from berth.daemon.container_events import ContainerEvents
from berth.backend import FakeBackend
from berth.errors import BackendError
from berth.telemetry.metrics import BerthMetrics
from berth.tasks import TaskSupervisor
from berth.types import OWNER_LABEL

AGENT_ID = "ag-watch"


class Lifecycle:
    def __init__(self) -> None:
        self.exits: list[str] = []
        self.ooms: list[str] = []

    async def on_container_exit(self, container_id: str) -> None:
        self.exits.append(container_id)

    def on_container_oom(self, container_id: str) -> None:
        self.ooms.append(container_id)


class Reconciler:
    def __init__(self) -> None:
        self.syncs = 0

    async def sync(self) -> int:
        self.syncs += 1
        return 0


class Watched:
    """The agent's container event watcher over a FakeBackend, a recording lifecycle and a
    counting reconciler."""

    def __init__(self) -> None:
        self.backend = FakeBackend()
        self.backend.add_image("busybox")
        self.lifecycle, self.reconciler = Lifecycle(), Reconciler()
        self.tasks = TaskSupervisor("test")
        self.events = ContainerEvents(self.backend, AGENT_ID, self.lifecycle, self.reconciler,
                                      BerthMetrics(AGENT_ID), self.tasks)

    async def container(self) -> str:
        cid = await self.backend.create(f"c{random.random()}", {
            "Image": "busybox", "Labels": {OWNER_LABEL: AGENT_ID}})
        await self.backend.start(cid)
        return cid

    async def subscribed(self) -> None:
        """The watcher iterates its stream (the stream's first ``anext`` ran)."""
        await _until(lambda: self.backend._subscribers and ("events", "") in self.backend.calls,
                     "the first subscription")


async def _until(check: Any, what: str, timeout: float = 10.0) -> None:
    deadline = asyncio.get_running_loop().time() + timeout
    while not check():
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError(f"{what} not within {timeout} s")
        await asyncio.sleep(0.05)


@pytest.fixture
async def w() -> AsyncIterator[Watched]:
    watched = Watched()
    task = asyncio.create_task(watched.events.run())
    try:
        yield watched
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        await watched.tasks.close()


async def _die(w: Watched) -> str:
    cid = await w.container()
    w.backend.kill(cid, 1)
    return cid


@pytest.mark.timeout(60)
async def test_stream_end_resubscribes_after_the_engine_answers_and_resyncs(w: Watched) -> None:
    await w.subscribed()
    first = await _die(w)
    await _until(lambda: first in w.lifecycle.exits, "the first death")
    assert w.reconciler.syncs == 0

    w.backend.inject_faults(random.Random(0), rate=1.0, kinds=["error"], verbs=["ping"])
    w.backend._subscribers[0].queue.put_nowait(None)  # the engine went away: the stream ends
    await asyncio.sleep(2.5)
    assert not w.backend._subscribers, "subscribed again before the engine answered"
    lost = await _die(w)  # dies while nobody listens
    w.backend.heal()
    await _until(lambda: w.reconciler.syncs == 1, "one resync pass")
    assert lost not in w.lifecycle.exits  # only the sync can see it (the stub does not)
    later = await _die(w)
    await _until(lambda: later in w.lifecycle.exits, "a death after the resubscribe")


@pytest.mark.timeout(60)
@pytest.mark.parametrize("error", [RuntimeError("an error the seam did not translate"),
                                   BackendError("events: ServerDisconnectedError()")])
async def test_any_stream_failure_is_survived(w: Watched, error: Exception) -> None:
    await w.subscribed()
    stream = w.backend._subscribers[0]
    w.backend.fail_next("events", error)  # the next subscription fails at once
    stream.queue.put_nowait(None)
    await _until(lambda: ("events", "") in w.backend.calls[1:], "a second subscription")
    await _until(lambda: w.reconciler.syncs >= 1, "a resync after the failure")
    cid = await _die(w)
    await _until(lambda: cid in w.lifecycle.exits, "events delivered after the failure")
