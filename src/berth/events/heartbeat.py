"""The heartbeat: the installed images, then ``agent_heartbeat``, every ``interval`` seconds.

The agent info and the image list come from callables the caller passes, so this module
knows nothing about plugins or Docker.  A heartbeat that cannot be sent while Redis is down
waits in the bus backlog *coalesced* (only the newest is kept) and goes out on reconnect.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import Protocol, Self

from berth.errors import BerthError
from berth.events.emitter import EventEmitter
from berth.events.models import AgentHeartbeatEvent, AgentInfo

log = logging.getLogger(__name__)

InfoSource = Callable[[], Awaitable[AgentInfo]]
ImagesSource = Callable[[], Awaitable[Sequence[Mapping[str, str]]]]


class InstalledImagesSink(Protocol):
    async def write_installed_images(self, images: Sequence[Mapping[str, str]]) -> None: ...


class Heartbeat:
    """Owns one task; ``async with Heartbeat(...)`` or ``start()``/``stop()``."""

    def __init__(self, emitter: EventEmitter, info: InfoSource, interval: float = 20.0, *,
                 images: ImagesSource | None = None,
                 store: InstalledImagesSink | None = None) -> None:
        if interval <= 0:
            raise ValueError(f"heartbeat interval must be > 0, got {interval}")
        self._emitter = emitter
        self._info = info
        self._images = images
        self._store = store
        self.interval = interval
        self.beats = 0
        self._task: asyncio.Task[None] | None = None

    async def beat(self) -> None:
        """Write the installed images, then emit one heartbeat: the manager reads the image
        list when it handles the heartbeat, so the list must be there first."""
        if self._images is not None and self._store is not None:
            try:
                await self._store.write_installed_images(await self._images())
            except BerthError as exc:
                log.warning("could not write installed images: %s", exc)
        info = await self._info()
        self._emitter.emit(AgentHeartbeatEvent(agent_info=info), coalesce=True)
        self.beats += 1

    async def _run(self, first_delay: float) -> None:
        loop = asyncio.get_running_loop()
        next_at = loop.time() + first_delay
        await asyncio.sleep(first_delay)
        while True:
            try:
                await self.beat()
            except Exception:
                log.exception("heartbeat failed; will retry next period")
            next_at += self.interval
            await asyncio.sleep(max(0.0, next_at - loop.time()))

    def start(self, first_delay: float = 0.0) -> None:
        """Beat every ``interval`` seconds, the first after ``first_delay``."""
        if self._task is None:
            self._task = asyncio.create_task(self._run(first_delay), name="heartbeat")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
            self._task = None

    async def __aenter__(self) -> Self:
        self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()
