"""Per-kernel stats collection: one bounded read per container, concurrently, each isolated.

A read runs in a worker thread under `read_timeout`; a container whose previous read is still
stuck in its thread is not read again (no pile-up of blocked threads) and goes to the Docker
fallback, when one is given. Kernels that leave the target list leave the snapshot at once.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import replace
from pathlib import Path
from typing import TypeVar

from berth.stats.derive import HostCapacity, KernelHistory, derive
from berth.stats.models import (
    ContainerSample,
    KernelStats,
    KernelTarget,
    Metric,
    NodeStats,
    ProcessStats,
    StatsSnapshot,
)
from berth.stats.scratch import scratch_usage
from berth.types import ContainerId, KernelId

log = logging.getLogger(__name__)
_T = TypeVar("_T")
_A = TypeVar("_A")

SampleReader = Callable[[KernelTarget], ContainerSample]
DockerFallback = Callable[[KernelTarget], Awaitable[ContainerSample]]
ScratchReader = Callable[[Path], int]
# Accelerator plugins add per-kernel metrics (cuda_util, cuda_mem, ...); blocking calls are fine.
KernelMetricSource = Callable[[KernelTarget], Mapping[str, Metric]]


class ReadStuck(Exception):
    """The previous read of this container has not returned yet."""


class StatsCollector:
    def __init__(
        self,
        reader: SampleReader,
        host: HostCapacity,
        *,
        read_timeout: float = 2.0,
        docker_fallback: DockerFallback | None = None,
        scratch_reader: ScratchReader | None = scratch_usage,
        kernel_sources: Sequence[KernelMetricSource] = (),
        max_workers: int = 4,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._reader = reader
        self._host = host
        self._timeout = read_timeout
        self._fallback = docker_fallback
        self._scratch_reader = scratch_reader
        self._clock = clock
        self._kernel_sources = kernel_sources
        self._executor = ThreadPoolExecutor(max_workers, thread_name_prefix="berth-stats")
        self._inflight: dict[str, Future[object]] = {}
        self._history: dict[KernelId, KernelHistory] = {}
        self._kernels: dict[KernelId, KernelStats] = {}
        self._node: NodeStats | None = None
        self._processes: dict[KernelId, ProcessStats] = {}
        self._oom: dict[ContainerId, int] = {}

    @property
    def latest(self) -> StatsSnapshot:
        live = self._kernels.keys()
        return StatsSnapshot(kernels=dict(self._kernels), node=self._node,
                             processes={k: p for k, p in self._processes.items() if k in live})

    def set_node(self, node: NodeStats) -> None:
        self._node = node

    def set_processes(self, processes: Mapping[KernelId, ProcessStats]) -> None:
        self._processes = dict(processes)

    def last_oom_kill_count(self, container_id: ContainerId) -> int | None:
        """The oom_kill counter seen at the last successful read (survives the cgroup's removal)."""
        return self._oom.get(container_id)

    async def collect(self, targets: Sequence[KernelTarget]) -> Mapping[KernelId, KernelStats]:
        """Read every target once (concurrently, each bounded); failed ones are left out."""
        self._inflight = {k: f for k, f in self._inflight.items() if not f.done()}
        live = {t.kernel_id for t in targets}
        for gone in set(self._history) - live:
            del self._history[gone]
        async with asyncio.TaskGroup() as tg:
            tasks = {t.kernel_id: tg.create_task(self._collect_one(t)) for t in targets}
        results = {kid: stats for kid, task in tasks.items() if (stats := task.result())}
        self._kernels = results
        self._oom = {k: v for k, v in self._oom.items()
                     if k in {t.container_id for t in targets}}
        return results

    async def _collect_one(self, target: KernelTarget) -> KernelStats | None:
        try:
            sample = await self._sample(target)
        except Exception as exc:  # noqa: BLE001 - one container's failure must not fail the cycle
            log.warning("stats of kernel %s unavailable: %r", target.kernel_id, exc)
            return None
        if sample.memory.oom_kill is not None:
            self._oom[target.container_id] = sample.memory.oom_kill
        scratch = await self._scratch(target)
        history = self._history.setdefault(target.kernel_id, KernelHistory())
        stats = derive(target, sample, history, self._host, scratch)
        extra = await self._extra(target)
        return replace(stats, metrics={**stats.metrics, **extra}) if extra else stats

    async def _extra(self, target: KernelTarget) -> dict[str, Metric]:
        merged: dict[str, Metric] = {}
        for index, source in enumerate(self._kernel_sources):
            try:
                merged.update(await self._bounded(f"source{index}:{target.kernel_id}", source,
                                                  target))
            except Exception as exc:  # noqa: BLE001 - a plugin's failure is its own
                log.warning("plugin stats of kernel %s unavailable: %r", target.kernel_id, exc)
        return merged

    async def _sample(self, target: KernelTarget) -> ContainerSample:
        try:
            return await self._bounded(target.container_id, self._reader, target)
        except Exception as exc:
            if self._fallback is None:
                raise
            log.info("cgroup read of kernel %s failed (%r); using the Docker stats API",
                     target.kernel_id, exc)
            return await asyncio.wait_for(self._fallback(target), self._timeout)

    async def _scratch(self, target: KernelTarget) -> int | None:
        if target.scratch_path is None or self._scratch_reader is None:
            return None
        try:
            return await self._bounded(f"scratch:{target.kernel_id}", self._scratch_reader,
                                       target.scratch_path)
        except Exception as exc:  # noqa: BLE001 - scratch usage is best effort
            log.warning("scratch usage of kernel %s unavailable: %r", target.kernel_id, exc)
            return None

    async def _bounded(self, key: str, fn: Callable[[_A], _T], arg: _A) -> _T:
        previous = self._inflight.get(key)
        if previous is not None and not previous.done():
            raise ReadStuck(key)
        future: Future[_T] = self._executor.submit(fn, arg)
        self._inflight[key] = future  # type: ignore[assignment]
        return await asyncio.wait_for(asyncio.wrap_future(future), self._timeout)

    def stuck_reads(self) -> list[str]:
        """Keys (container ids, `scratch:<kernel>`) whose read is still blocked in a thread."""
        return [key for key, future in self._inflight.items() if not future.done()]

    def close(self) -> None:
        """Stop the worker threads (a stuck read is abandoned, not waited for)."""
        self._executor.shutdown(wait=False, cancel_futures=True)
