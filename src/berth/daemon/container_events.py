"""Docker events of this agent's containers, delivered to the kernel lifecycle.

The stream ends or breaks when the engine stops or restarts: once the engine answers again it is
subscribed anew, and one sync pass soon after catches the deaths whose events were missed.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Protocol

from berth.backend import ContainerBackend
from berth.tasks import TaskSupervisor
from berth.types import OWNER_LABEL

__all__ = ["ContainerEvents"]

log = logging.getLogger(__name__)


class ExitListener(Protocol):
    def on_container_oom(self, container_id: str) -> None: ...

    async def on_container_exit(self, container_id: str) -> None: ...


class Syncer(Protocol):
    async def sync(self) -> int: ...


class SyncMetrics(Protocol):
    def observe_lifecycle_sync(self, exc: BaseException | None = None) -> None: ...


class ContainerEvents:
    def __init__(self, backend: ContainerBackend, agent_id: str, lifecycle: ExitListener,
                 reconciler: Syncer, metrics: SyncMetrics, tasks: TaskSupervisor, *,
                 retry_interval: float = 1.0) -> None:
        self.backend = backend
        self.agent_id = agent_id
        self.lifecycle = lifecycle
        self.reconciler = reconciler
        self.metrics = metrics
        self.tasks = tasks  # the agent's: exits are judged, and resyncs run, as its tasks
        self.retry_interval = retry_interval

    async def run(self) -> None:
        broke = False
        while True:
            try:
                events = self.backend.events({OWNER_LABEL: self.agent_id})
                if broke:
                    self.tasks.spawn(self._resync(), name="resync-after-events-break")
                async for event in events:
                    if event.action == "oom":
                        self.lifecycle.on_container_oom(event.container_id)
                    elif event.action in ("die", "destroy"):
                        self.tasks.spawn(self.lifecycle.on_container_exit(event.container_id),
                                         name=f"exit-{event.container_id[:12]}")
                log.warning("docker events stream ended; resubscribing")
            except Exception as exc:  # noqa: BLE001 - whatever broke the stream, resubscribe
                log.warning("docker events stream broke: %r; resubscribing", exc)
            broke = True
            await asyncio.sleep(self.retry_interval)
            while not await self.backend.ping():  # noqa: ASYNC110 - a down engine has nothing to wait on
                await asyncio.sleep(self.retry_interval)

    async def _resync(self) -> None:
        """One lifecycle sync pass a retry interval after the events stream is back."""
        await asyncio.sleep(self.retry_interval)
        try:
            count = await self.reconciler.sync()
            self.metrics.observe_lifecycle_sync()
            log.info("resync after the events stream broke: %d corrections", count)
        except Exception as exc:  # noqa: BLE001 - the periodic sync retries
            self.metrics.observe_lifecycle_sync(exc)
            log.warning("resync after the events stream broke failed: %r", exc)
