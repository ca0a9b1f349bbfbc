"""Node stats through psutil (the only stats module importing it): CPU per core, memory,
disk, network, and the agent process's own usage. `collect()` blocks briefly; run it in a
thread. Accelerator plugins add per-device metrics through `device_sources`."""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping, Sequence
from decimal import Decimal
from pathlib import Path
from typing import Any

import psutil

from berth.stats.derive import KernelHistory
from berth.stats.models import Metric, NodeStats

DeviceMetrics = Mapping[str, Mapping[str, Metric]]   # metric key → device id → value
DeviceSource = Callable[[], DeviceMetrics]
_GAUGE = frozenset({"min", "max", "avg"})


def busy_msec(times: Any) -> Decimal:
    """Non-idle CPU time of one core in msec (idle and iowait excluded)."""
    total = sum(times)
    idle = times.idle + getattr(times, "iowait", 0.0)
    return Decimal(repr(total - idle)) * 1000


class NodeCollector:
    def __init__(
        self,
        *,
        disk_paths: Sequence[Path] = (Path("/"),),
        net_exclude: frozenset[str] = frozenset({"lo"}),
        device_sources: Sequence[DeviceSource] = (),
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._disk_paths = disk_paths
        self._net_exclude = net_exclude
        self._device_sources = device_sources
        self._clock = clock
        self._history = KernelHistory()
        self._process = psutil.Process()
        self._process.cpu_percent()  # prime: the first call always returns 0.0

    def _gauge(self, key: str, value: Decimal, at: float, unit: str,
               capacity: Decimal | None) -> Metric:
        stats = self._history.feed(key, value, at)
        return Metric(key, value, capacity, unit, stats, _GAUGE)

    def _cpu(self, at: float) -> tuple[Metric, dict[str, Metric]]:
        per_core: dict[str, Metric] = {}
        for index, times in enumerate(psutil.cpu_times(percpu=True)):
            rate = self._history.feed(f"cpu:{index}:busy", busy_msec(times), at).rate
            per_core[str(index)] = self._gauge(f"cpu_util:{index}", rate / 10, at, "percent",
                                               Decimal(100))
        total = sum((m.current for m in per_core.values()), Decimal(0))
        node = self._gauge("cpu_util", total, at, "percent", Decimal(100 * len(per_core)))
        return node, per_core

    def _mem(self, at: float) -> Metric:
        vm = psutil.virtual_memory()
        return self._gauge("mem", Decimal(vm.total - vm.available), at, "bytes",
                           Decimal(vm.total))

    def _disk(self, at: float) -> Metric:
        usages = [psutil.disk_usage(str(p)) for p in self._disk_paths]
        return self._gauge("disk", Decimal(sum(u.used for u in usages)), at, "bytes",
                           Decimal(sum(u.total for u in usages)))

    def _net(self, at: float) -> list[Metric]:
        # nowrap=False: psutil's wrap tracking keeps an entry for every NIC it ever saw, and
        # each kernel's veth is a new NIC (a leak per kernel); Linux counters are 64-bit.
        nics = psutil.net_io_counters(pernic=True, nowrap=False)
        rx = sum(c.bytes_recv for n, c in nics.items() if n not in self._net_exclude)
        tx = sum(c.bytes_sent for n, c in nics.items() if n not in self._net_exclude)
        out = []
        for key, value in (("net_rx", rx), ("net_tx", tx)):
            rate = self._history.feed(f"{key}:counter", Decimal(value), at).rate
            out.append(self._gauge(key, rate, at, "bps", None))
        return out

    def collect(self) -> NodeStats:
        at = self._clock()
        cpu, per_core = self._cpu(at)
        mem = self._mem(at)
        metrics = {m.key: m for m in (cpu, mem, self._disk(at), *self._net(at))}
        # Backend.AI's node measures: net_rx / net_tx also per device, the node as one device.
        devices: dict[str, dict[str, Metric]] = {
            "cpu_util": per_core, "mem": {"root": mem},
            **{key: {"node": metrics[key]} for key in ("net_rx", "net_tx")}}
        for source in self._device_sources:
            for key, per_device in source().items():
                devices.setdefault(key, {}).update(per_device)
        with self._process.oneshot():
            agent_cpu = self._process.cpu_percent()
            agent_mem = self._process.memory_info().rss
        return NodeStats(metrics=metrics, devices=devices, agent_cpu_pct=agent_cpu,
                         agent_mem_bytes=agent_mem)
