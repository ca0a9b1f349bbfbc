"""Intrinsic `mem` plugin: one device `root` holding the host's RAM; slot `mem` (bytes).

Memory is limited with swap off (`MemorySwap == Memory`), so a kernel cannot use more than it
was given.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from decimal import Decimal
from pathlib import Path
from typing import Any, ClassVar

import psutil

from berth.errors import PluginError
from berth.resources import (
    AllocationStrategy,
    AttachedDevice,
    ComputeDevice,
    DeviceAlloc,
    DeviceSlot,
    DiscreteAllocMap,
    DockerArgs,
    HardwareInfo,
    Measure,
    slot_metadata,
    total_per_device,
)
from berth.types import DeviceId, KernelId, SlotName, SlotType

log = logging.getLogger(__name__)

SLOT = SlotName("mem")
ROOT = DeviceId("root")


def parse_meminfo_total(text: str) -> int:
    """Bytes of `MemTotal:` in /proc/meminfo."""
    for line in text.splitlines():
        if line.startswith("MemTotal:"):
            return int(line.split()[1]) * 1024
    raise PluginError("MemTotal missing from meminfo")


class MemoryPlugin:
    key: ClassVar[str] = "mem"
    slot_types: ClassVar[Sequence[tuple[SlotName, SlotType]]] = ((SLOT, SlotType.BYTES),)
    require_explicit_allow: ClassVar[bool] = False

    def __init__(self, config: Mapping[str, Any] | None = None) -> None:
        config = config or {}
        self._proc_root = Path(config.get("proc_root", "/proc"))
        self._total = 0

    async def init(self) -> None:
        self._total = parse_meminfo_total((self._proc_root / "meminfo").read_text())
        log.info("mem: %d bytes", self._total)

    async def cleanup(self) -> None:
        return None

    def list_devices(self) -> Sequence[ComputeDevice]:
        return (ComputeDevice(ROOT, "root", None, self._total, 0, "RAM"),)

    def available_slots(self) -> dict[SlotName, Decimal]:
        return {SLOT: Decimal(self._total)}

    def create_alloc_map(self) -> DiscreteAllocMap:
        return DiscreteAllocMap({ROOT: DeviceSlot(SLOT, SlotType.BYTES, Decimal(self._total))},
                                strategy=AllocationStrategy.FILL)

    def generate_docker_args(self, device_alloc: DeviceAlloc) -> DockerArgs:
        amount = int(sum(total_per_device(device_alloc).values(), Decimal(0)))
        return {"HostConfig": {"Memory": amount, "MemorySwap": amount}}

    def get_attached_devices(self, device_alloc: DeviceAlloc) -> list[AttachedDevice]:
        return [{"device_id": d, "model_name": "RAM", "data": {"mem": int(a)}}
                for d, a in total_per_device(device_alloc).items()]

    async def gather_node_measures(self) -> list[Measure]:
        vm = psutil.virtual_memory()
        return [Measure("mem_used", "bytes", {ROOT: Decimal(vm.total - vm.available)},
                        {ROOT: Decimal(vm.total)})]

    async def gather_container_measures(self, allocs: Mapping[KernelId, DeviceAlloc]
                                        ) -> list[Measure]:
        return []  # per-container memory comes from cgroupfs (berth.stats)

    async def get_node_hwinfo(self) -> HardwareInfo:
        return {"status": "healthy", "status_info": None, "metadata": {"total": str(self._total)}}

    def get_metadata(self) -> dict[str, dict[str, Any]]:
        return {SLOT: slot_metadata(SLOT, human_name="RAM", unit="GiB", description="Memory",
                                    binary=True)}

    def extra_info(self) -> dict[str, str]:
        return {}
