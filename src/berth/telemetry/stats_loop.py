"""Watching the node: the stats loop, the Prometheus registry and the internal HTTP server.

Stats come straight from cgroupfs (a cycle's reads batched in one thread), node figures
from psutil; both feed Prometheus at scrape time and, when Redis is configured, the keys the
Manager reads.
"""

from __future__ import annotations

import asyncio
import logging
import os
from collections.abc import Awaitable, Callable, Mapping, Sequence
from decimal import Decimal
from pathlib import Path
from typing import TYPE_CHECKING, Any

import psutil

from berth.kernel import KernelRegistry
from berth.resources import ComputePlugin, DeviceAlloc, Measure, ResourceManager
from berth.stats import (
    CgroupReader,
    HostCapacity,
    KernelTarget,
    Metric,
    NodeCollector,
    ProcessCollector,
    ScratchMeter,
    StatsCollector,
    StatsSnapshot,
)
from berth.telemetry.heap import HeapTrimmer, malloc_trim
from berth.telemetry.metrics import BerthMetrics, HoldingsSource
from berth.telemetry.web import InternalServer
from berth.types import ContainerId, KernelId, KernelState

if TYPE_CHECKING:
    from berth.events import ErrorReporter

__all__ = ["Telemetry"]

log = logging.getLogger(__name__)

StatsSink = Callable[[StatsSnapshot], Awaitable[None]]


_INTRINSIC = frozenset({"cpu", "mem"})  # psutil and cgroupfs measure these directly


class PluginMeasures:
    """Accelerator figures from the compute plugins, gathered once per cycle (async) and
    served to the synchronous stats sources from that cache."""

    def __init__(self, resources: ResourceManager | None = None,
                 errors: ErrorReporter | None = None) -> None:
        self.resources = resources
        # Told when a plugin's measures fail (once per failure streak: agent_error).
        self.errors = errors
        self._node: dict[str, dict[str, Metric]] = {}
        self._kernels: dict[str, dict[str, Metric]] = {}

    async def refresh(self) -> None:
        if self.resources is None:
            return
        node: dict[str, dict[str, Metric]] = {}
        kernels: dict[str, dict[str, Metric]] = {}
        allocations = self.resources.allocations()
        for plugin in self.resources.plugins:
            if plugin.key in _INTRINSIC:
                continue
            allocs = {kid: a.devices[plugin.key] for kid, a in allocations.items()
                      if a.devices.get(plugin.key)}
            try:
                await self._gather(plugin, allocs, node, kernels)
            except Exception as exc:  # noqa: BLE001 - one plugin's failure is its own
                self._failed(plugin.key, exc)
            else:
                if self.errors is not None:
                    self.errors.clear(f"measures:{plugin.key}")
        self._node, self._kernels = node, kernels

    @staticmethod
    async def _gather(plugin: ComputePlugin, allocs: Mapping[KernelId, DeviceAlloc],
                      node: dict[str, dict[str, Metric]],
                      kernels: dict[str, dict[str, Metric]]) -> None:
        for m in await plugin.gather_node_measures():
            node[m.key] = {dev: _metric(m, dev, v) for dev, v in m.values.items()}
        for m in await plugin.gather_container_measures(allocs):
            for kid, v in m.values.items():
                kernels.setdefault(kid, {})[m.key] = _metric(m, kid, v)

    def _failed(self, key: str, exc: Exception) -> None:
        log.warning("compute plugin %s: measures unavailable: %r", key, exc)
        if self.errors is not None:
            self.errors.report(f"compute plugin {key} failed to gather its measures: {exc!r}",
                               source="plugin", exc=exc, key=f"measures:{key}",
                               plugin=key, stage="measures")

    def device_metrics(self) -> dict[str, dict[str, Metric]]:
        return self._node

    def kernel_metrics(self, target: KernelTarget) -> dict[str, Metric]:
        return self._kernels.get(target.kernel_id, {})


def _metric(measure: Measure, key: str, value: Decimal) -> Metric:
    return Metric(key=measure.key, current=value, capacity=measure.capacity.get(key),
                  unit_hint=measure.unit)


class Telemetry:
    def __init__(self, agent_id: str, internal_addr: str, registry: KernelRegistry, *,
                 interval: float,
                 readiness: Callable[[], Awaitable[list[str]]],
                 scratch_quota: int | None, info: dict[str, Any],
                 scratch_dir: Callable[[str], Path] | None = None,
                 resources: ResourceManager | None = None, errors: ErrorReporter | None = None,
                 sinks: Sequence[StatsSink] = (),
                 holdings: HoldingsSource | None = None) -> None:
        self.registry = registry
        self.interval = interval
        self.scratch_quota = scratch_quota
        self.scratch_dir = scratch_dir  # kernel id → its scratch dir, for io_scratch_size
        self.reader = CgroupReader()
        self.plugins = PluginMeasures(resources, errors)
        self.collector = StatsCollector(
            self.reader.read,
            HostCapacity(cpu_count=os.cpu_count() or 1,
                         mem_total=psutil.virtual_memory().total),
            scratch_reader=ScratchMeter(), kernel_sources=[self.plugins.kernel_metrics])
        self.node = NodeCollector(device_sources=[self.plugins.device_metrics])
        self.processes = ProcessCollector(self.reader.read_pids)
        self.metrics = BerthMetrics(agent_id, lambda: self.collector.latest, holdings=holdings)
        self.server = InternalServer(internal_addr, self.metrics, readiness=readiness, info=info)
        self.sinks: list[StatsSink] = list(sinks)
        self.trimmer = HeapTrimmer()

    async def start(self) -> None:
        await self.server.start()

    async def close(self) -> None:
        await self.server.close()
        self.collector.close()
        self.reader.close()

    def targets(self) -> list[KernelTarget]:
        out = []
        for kernel in self.registry.live():
            if kernel.state != KernelState.RUNNING or not kernel.container_id or not kernel.pid:
                continue
            out.append(KernelTarget(
                kernel_id=KernelId(kernel.kernel_id),
                container_id=ContainerId(kernel.container_id), pid=kernel.pid,
                session_id=kernel.session_id, user_id=kernel.spec.owner_user_id or "",
                project_id=kernel.spec.owner_project_id or "",
                scratch_path=self.scratch_dir(kernel.kernel_id) if self.scratch_dir else None,
                scratch_quota=self.scratch_quota))
        return out

    async def collect_once(self) -> StatsSnapshot:
        await self.plugins.refresh()
        targets = self.targets()
        with self.metrics.stat_task("container"):
            await self.collector.collect(targets)
        with self.metrics.stat_task("process"):
            self.collector.set_processes(
                await asyncio.to_thread(self.processes.collect, targets))
        # Cached cgroup paths go with their containers (the collector prunes its own state).
        self.reader.retain({k.container_id for k in self.registry.live() if k.container_id})
        with self.metrics.stat_task("node"):
            self.collector.set_node(await asyncio.to_thread(self.node.collect))
        self.metrics.set_kernel_count(len(self.registry))
        if self.trimmer.due(len(targets)):  # many kernels gone: their freed heap goes back
            await asyncio.to_thread(malloc_trim)
        snapshot = self.collector.latest
        for sink in self.sinks:
            try:
                await sink(snapshot)
            except Exception as exc:  # noqa: BLE001 - a Manager-side hiccup never stops the loop
                log.warning("stats sink failed: %r", exc)
        return snapshot

    async def run(self) -> None:
        while True:
            try:
                await self.collect_once()
            except Exception as exc:  # noqa: BLE001 - one failed cycle must not end the loop
                log.warning("stats cycle failed: %r", exc)
            await asyncio.sleep(self.interval)

    def kernel_stats(self, kernel_id: str) -> dict[str, Any] | None:
        stats = self.collector.latest.kernels.get(KernelId(kernel_id))
        return stats.to_wire() if stats is not None else None

    def node_stats(self) -> dict[str, Any] | None:
        node = self.collector.latest.node
        return node.to_wire() if node is not None else None
