"""Intrinsic `cpu` plugin: one device per usable core; slot `cpu` (count, fractional).

Cores come from `os.sched_getaffinity(0)` (what this process may use), NUMA nodes from
`{sys_root}/devices/system/node/node*/cpulist`. A kernel's cores are pinned with
`CpusetCpus` and its amount enforced with the CFS quota (`CpuQuota = amount × CpuPeriod`), so
`cpu = 0.5` is half of one core and `cpu = 2.5` two and a half cores over three.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Collection, Mapping, Sequence
from decimal import Decimal
from pathlib import Path
from typing import Any, ClassVar

import psutil

from berth.resources import (
    AllocationStrategy,
    AttachedDevice,
    ComputeDevice,
    DeviceAlloc,
    DeviceSlot,
    DockerArgs,
    FractionAllocMap,
    HardwareInfo,
    Measure,
    allocated_devices,
    slot_metadata,
    total_per_device,
)
from berth.types import DeviceId, KernelId, SlotName, SlotType

log = logging.getLogger(__name__)

CPU_PERIOD_US = 100_000
SLOT = SlotName("cpu")


def parse_cpulist(text: str) -> list[int]:
    """`"0-3,8,10-11"` → [0, 1, 2, 3, 8, 10, 11] (the kernel's cpulist format)."""
    cores: list[int] = []
    for part in text.strip().split(","):
        if not part:
            continue
        first, _, last = part.partition("-")
        cores.extend(range(int(first), int(last or first) + 1))
    return cores


def numa_of_cores(sys_root: Path) -> dict[int, int]:
    """core → NUMA node from sysfs; empty when the host exposes no node directories."""
    mapping: dict[int, int] = {}
    for node_dir in sorted((sys_root / "devices/system/node").glob("node[0-9]*")):
        cpulist = node_dir / "cpulist"
        if cpulist.is_file():
            node = int(node_dir.name.removeprefix("node"))
            mapping.update({core: node for core in parse_cpulist(cpulist.read_text())})
    return mapping


class CPUPlugin:
    key: ClassVar[str] = "cpu"
    slot_types: ClassVar[Sequence[tuple[SlotName, SlotType]]] = ((SLOT, SlotType.COUNT),)
    require_explicit_allow: ClassVar[bool] = False

    def __init__(self, config: Mapping[str, Any] | None = None) -> None:
        config = config or {}
        self._sys_root = Path(config.get("sys_root", "/sys"))
        self._cores: Collection[int] | None = config.get("cores")
        self._devices: list[ComputeDevice] = []

    async def init(self) -> None:
        cores = sorted(self._cores if self._cores is not None else os.sched_getaffinity(0))
        numa = numa_of_cores(self._sys_root)
        self._devices = [ComputeDevice(DeviceId(str(c)), f"cpu{c}", numa.get(c), 0, 1,
                                       f"CPU core {c}") for c in cores]
        log.info("cpu: %d cores on NUMA nodes %s", len(cores), sorted(set(numa.values())))

    async def cleanup(self) -> None:
        return None

    def list_devices(self) -> Sequence[ComputeDevice]:
        return tuple(self._devices)

    def available_slots(self) -> dict[SlotName, Decimal]:
        return {SLOT: Decimal(len(self._devices))}

    def create_alloc_map(self) -> FractionAllocMap:
        slots = {d.device_id: DeviceSlot(SLOT, SlotType.COUNT, Decimal(1)) for d in self._devices}
        return FractionAllocMap(slots, strategy=AllocationStrategy.EVENLY, fragmentation=True)

    def generate_docker_args(self, device_alloc: DeviceAlloc) -> DockerArgs:
        cores = sorted(allocated_devices(device_alloc), key=int)
        amount = sum(total_per_device(device_alloc).values(), Decimal(0))
        return {"HostConfig": {"CpusetCpus": ",".join(cores), "CpuPeriod": CPU_PERIOD_US,
                               "CpuQuota": int(amount * CPU_PERIOD_US)}}

    def get_attached_devices(self, device_alloc: DeviceAlloc) -> list[AttachedDevice]:
        return [{"device_id": d, "model_name": "CPU core", "data": {"smp": str(a)}}
                for d, a in total_per_device(device_alloc).items()]

    async def gather_node_measures(self) -> list[Measure]:
        per_core = psutil.cpu_percent(percpu=True)
        values = {str(i): Decimal(str(p)) for i, p in enumerate(per_core)}
        return [Measure("cpu_util", "percent", values)]

    async def gather_container_measures(self, allocs: Mapping[KernelId, DeviceAlloc]
                                        ) -> list[Measure]:
        return []  # per-container CPU comes from cgroupfs (berth.stats), not from here

    async def get_node_hwinfo(self) -> HardwareInfo:
        nodes = sorted({d.numa_node for d in self._devices if d.numa_node is not None})
        return {"status": "healthy", "status_info": None,
                "metadata": {"cores": str(len(self._devices)),
                             "numa_nodes": ",".join(map(str, nodes))}}

    def get_metadata(self) -> dict[str, dict[str, Any]]:
        return {SLOT: slot_metadata(SLOT, human_name="CPU", unit="Core",
                                    description="CPU", round_length=2)}

    def extra_info(self) -> dict[str, str]:
        return {}
