"""Per-kernel stats collection: one cycle's reads batched in one worker thread, each isolated.

A cycle reads every container in one worker thread, one after the other (a read is a dozen
`pread`s on held descriptors, ~0.05 ms: a thread or a task per container would cost more than
the read). Scratch usage and plugin sources run as their own batches beside it. A read that
makes no progress for `read_timeout` is abandoned: its container counts as stuck (not read
again while its thread is blocked; the Docker fallback, when one is given, answers for it) and
the rest of the batch goes on in a fresh thread. Kernels that leave the target list leave the
snapshot at once. Metrics are derived in the event loop, yielding every `_DERIVE_SLICE` kernels.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import replace
from pathlib import Path
from typing import Any

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

SampleReader = Callable[[KernelTarget], ContainerSample]
DockerFallback = Callable[[KernelTarget], Awaitable[ContainerSample]]
ScratchReader = Callable[[Path], int]
# Accelerator plugins add per-kernel metrics (cuda_util, cuda_mem, ...); blocking calls are fine.
KernelMetricSource = Callable[[KernelTarget], Mapping[str, Metric]]
_Call = tuple[str, Callable[[Any], Any], Any]     # (key, function, argument)
_DERIVE_SLICE = 64


class ReadStuck(Exception):
    """The previous read of this container has not returned yet."""


class _Batch:
    """Calls run in order in one worker thread; `abandon` stops it after the call at hand."""

    def __init__(self, calls: list[_Call]) -> None:
        self.calls = calls
        self.results: dict[str, Any] = {}
        self.current: str | None = None
        self.finished = 0
        self._abandoned = False
        self._lock = threading.Lock()

    def run(self) -> None:
        for key, fn, arg in self.calls:
            with self._lock:
                if self._abandoned:
                    return
                self.current = key
            try:
                result = fn(arg)
            except Exception as exc:  # noqa: BLE001 - handed to the caller per key
                result = exc
            with self._lock:
                if self._abandoned:
                    return
                self.results[key] = result
                self.finished += 1
                self.current = None

    def abandon(self) -> tuple[dict[str, Any], str | None]:
        """Stop the thread after its call at hand; (results so far, key of that call)."""
        with self._lock:
            self._abandoned = True
            return dict(self.results), self.current


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
        self._inflight: dict[str, Future[Any]] = {}
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
        """Read every target once (batched, each bounded); failed ones are left out."""
        self._inflight = {k: f for k, f in self._inflight.items() if not f.done()}
        live = {t.kernel_id for t in targets}
        for gone in set(self._history) - live:
            del self._history[gone]
        samples, scratch, extra = await asyncio.gather(
            self._run([(t.container_id, self._reader, t) for t in targets]),
            self._run(self._scratch_calls(targets)),
            self._run([(f"source{i}:{t.kernel_id}", source, t) for t in targets
                       for i, source in enumerate(self._kernel_sources)]))
        await self._fall_back(targets, samples)
        results: dict[KernelId, KernelStats] = {}
        for n, target in enumerate(targets):
            if n and n % _DERIVE_SLICE == 0:
                await asyncio.sleep(0)  # let RPCs in between slices of a large node
            sample = samples[target.container_id]
            if isinstance(sample, BaseException):
                log.warning("stats of kernel %s unavailable: %r", target.kernel_id, sample)
                continue
            results[target.kernel_id] = self._derive(
                target, sample, self._scratch_of(target, scratch), self._extra(target, extra))
        self._kernels = results
        containers = {t.container_id for t in targets}
        self._oom = {k: v for k, v in self._oom.items() if k in containers}
        return results

    def _derive(self, target: KernelTarget, sample: ContainerSample, scratch: int | None,
                extra: dict[str, Metric]) -> KernelStats:
        if sample.memory.oom_kill is not None:
            self._oom[target.container_id] = sample.memory.oom_kill
        history = self._history.get(target.kernel_id)
        if history is None:
            history = self._history[target.kernel_id] = KernelHistory()
        stats = derive(target, sample, history, self._host, scratch)
        return replace(stats, metrics={**stats.metrics, **extra}) if extra else stats

    def _scratch_calls(self, targets: Sequence[KernelTarget]) -> list[_Call]:
        if self._scratch_reader is None:
            return []
        return [(f"scratch:{t.kernel_id}", self._scratch_reader, t.scratch_path)
                for t in targets if t.scratch_path is not None]

    @staticmethod
    def _scratch_of(target: KernelTarget, results: Mapping[str, Any]) -> int | None:
        used = results.get(f"scratch:{target.kernel_id}")
        if isinstance(used, BaseException):  # scratch usage is best effort
            log.warning("scratch usage of kernel %s unavailable: %r", target.kernel_id, used)
            return None
        return used if isinstance(used, int) else None

    def _extra(self, target: KernelTarget, results: Mapping[str, Any]) -> dict[str, Metric]:
        merged: dict[str, Metric] = {}
        for index in range(len(self._kernel_sources)):
            got = results.get(f"source{index}:{target.kernel_id}")
            if isinstance(got, BaseException):  # a plugin's failure is its own
                log.warning("plugin stats of kernel %s unavailable: %r", target.kernel_id, got)
            elif got:
                merged.update(got)
        return merged

    async def _fall_back(self, targets: Sequence[KernelTarget], samples: dict[str, Any]) -> None:
        """Ask the Docker fallback, concurrently, for every container whose read failed."""
        failed = [t for t in targets if isinstance(samples[t.container_id], BaseException)]
        if self._fallback is None or not failed:
            return
        for target in failed:
            log.info("cgroup read of kernel %s failed (%r); using the Docker stats API",
                     target.kernel_id, samples[target.container_id])
        fallback = self._fallback
        answers = await asyncio.gather(
            *(asyncio.wait_for(fallback(t), self._timeout) for t in failed),
            return_exceptions=True)
        for target, answer in zip(failed, answers, strict=True):
            samples[target.container_id] = answer

    async def _run(self, calls: list[_Call]) -> dict[str, Any]:
        """Each call's result (or exception) by key, all calls in one worker thread; a call
        whose previous run is still blocked gets `ReadStuck` without being called."""
        results: dict[str, Any] = {}
        pending: list[_Call] = []
        for call in calls:
            previous = self._inflight.get(call[0])
            if previous is not None and not previous.done():
                results[call[0]] = ReadStuck(call[0])
            else:
                pending.append(call)
        while pending:
            pending = await self._watch(_Batch(pending), results)
        return results

    async def _watch(self, batch: _Batch, results: dict[str, Any]) -> list[_Call]:
        """Run `batch` while it makes progress; when a call blocks for `read_timeout`, mark
        it stuck and return the calls not yet made (run by the caller in a fresh thread)."""
        future: Future[None] = self._executor.submit(batch.run)
        waiter = asyncio.wrap_future(future)
        finished = 0
        while True:
            done, _ = await asyncio.wait({waiter}, timeout=self._timeout)
            if done:
                results.update(batch.results)
                return []
            if batch.finished != finished:
                finished = batch.finished
                continue
            waiter.cancel()
            so_far, stuck = batch.abandon()
            results.update(so_far)
            if stuck is None:  # never started: every worker thread is blocked
                future.cancel()
                for key, _, _ in batch.calls:
                    results.setdefault(key, TimeoutError())
                return []
            self._inflight[stuck] = future
            results[stuck] = TimeoutError()
            return [call for call in batch.calls if call[0] not in results]

    def stuck_reads(self) -> list[str]:
        """Keys (container ids, `scratch:<kernel>`) whose read is still blocked in a thread."""
        return [key for key, future in self._inflight.items() if not future.done()]

    def close(self) -> None:
        """Stop the worker threads (a stuck read is abandoned, not waited for)."""
        self._executor.shutdown(wait=False, cancel_futures=True)
