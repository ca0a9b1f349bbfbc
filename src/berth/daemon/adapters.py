"""Thin adapters that fit subsystem APIs to the roles the kernel lifecycle expects."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Mapping, Sequence
from decimal import Decimal
from pathlib import Path
from typing import Any

from berth.events import models as ev
from berth.kernel import ScratchLayout
from berth.resources import AllocationOptions, KernelAllocation, ResourceManager
from berth.stats import CgroupReader, StatsCollector
from berth.storage import ScratchPaths, docker_mounts, intrinsic_mounts, parse_mounts
from berth.types import ContainerId, KernelId, SlotName

__all__ = ["EventAdapter", "MountAdapter", "OomCounterAdapter", "ResourceAdapter"]

log = logging.getLogger(__name__)


class ResourceAdapter:
    """The kernel's resource role over :class:`ResourceManager`: typed records both ways."""

    def __init__(self, manager: ResourceManager) -> None:
        self.manager = manager

    def allocate(self, kernel_id: KernelId, requested: Mapping[SlotName, Decimal],
                 opts: Mapping[str, Any]) -> KernelAllocation:
        return self.manager.allocate_slots(kernel_id, requested,
                                           AllocationOptions.from_resource_opts(opts))

    def restore(self, kernel_id: KernelId, allocation: KernelAllocation) -> None:
        self.manager.restore(kernel_id, allocation)

    def free(self, kernel_id: KernelId) -> None:
        self.manager.free(kernel_id)

    def container_args(self, allocation: KernelAllocation | None) -> dict[str, Any]:
        return dict(self.manager.docker_args(allocation)) if allocation is not None else {}


class MountAdapter:
    def __init__(self, allowed_roots: Sequence[Path], runner_dir: Path) -> None:
        self.allowed_roots = list(allowed_roots)
        self.runner_dir = runner_dir

    def plan(self, layout: ScratchLayout, mounts: Sequence[Mapping[str, Any]]
             ) -> list[dict[str, Any]]:
        assert isinstance(layout, ScratchPaths)
        vfolders = parse_mounts(list(mounts), self.allowed_roots)
        return intrinsic_mounts(layout, self.runner_dir) + docker_mounts(vfolders)


_KERNEL_EVENTS: dict[str, type[ev.KernelLifecycleEvent]] = {
    cls.name: cls for cls in (ev.KernelPreparingEvent, ev.KernelPullingEvent,
                              ev.KernelCreatingEvent, ev.KernelStartedEvent,
                              ev.KernelTerminatedEvent)
}


_OTHER_EVENTS: dict[str, type[ev.AgentEvent]] = {ev.AgentErrorEvent.name: ev.AgentErrorEvent}


class OomCounterAdapter:
    """The lifecycle's OOM counter over the stats tier's cgroup reader and its last readings."""

    def __init__(self, reader: CgroupReader, collector: StatsCollector,
                 timeout: float = 2.0) -> None:
        self.reader = reader
        self.collector = collector
        self.timeout = timeout

    async def oom_kills(self, container_id: str, pid: int) -> int | None:
        try:
            async with asyncio.timeout(self.timeout):
                return await asyncio.to_thread(self.reader.oom_kill_count, container_id, pid)
        except (OSError, ValueError, TimeoutError) as exc:
            log.debug("oom_kill counter of %s unreadable: %r", container_id[:12], exc)
            return None

    def last_oom_kills(self, container_id: str) -> int | None:
        return self.collector.last_oom_kill_count(ContainerId(container_id))


class EventAdapter:
    """Turns the lifecycle's (name, payload) into typed events on the bus (or the log)."""

    def __init__(self, bus: Any | None) -> None:
        self.bus = bus

    def emit(self, name: str, payload: Mapping[str, Any], *, broadcast: bool = False) -> None:
        cls = _KERNEL_EVENTS.get(name) or _OTHER_EVENTS.get(name)
        if cls is None:
            log.error("no event model named %s", name)
            return
        event = cls.model_validate(dict(payload))
        log.debug("event %s %s", name, event.payload_json())
        if self.bus is not None:
            self.bus.emit(event)
