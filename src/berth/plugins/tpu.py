"""`tpu` accelerator: Cloud TPU chips from the host's device tree.

Chips are `/dev/accel<N>` (v2–v5e, the accel driver) or, when there are none, VFIO groups
`/dev/vfio/<N>` (v5p, v6e); both roots are injectable. Device ids are `accel<N>` or `vfio<N>`;
slot `tpu.device` (whole chips). Containers get the chips' device nodes (and `/dev/vfio/vfio`
for VFIO) under their host names, and the variables libtpu reads: `TPU_VISIBLE_CHIPS` (host
chip indices, since device names are kept), `TPU_CHIPS_PER_PROCESS_BOUNDS` and
`TPU_PROCESS_BOUNDS` for the chip counts with a known host topology (1, 2, 4, 8).
NUMA nodes come from `{sys_root}/class/accel/accel<N>/device/numa_node` when present.
Utilization (`tpu_util`, duty cycle %) and HBM use (`tpu_mem`, bytes against the total) come
from libtpu's runtime metrics service in the process holding each chip (`tpu_metrics`); a chip
no process holds is idle (0 %); a holder whose service does not answer leaves its chips out.
"""

from __future__ import annotations

import asyncio
import logging
import re
from collections.abc import Mapping, Sequence
from decimal import Decimal
from pathlib import Path
from typing import Any, ClassVar

from berth.plugins.tpu_metrics import (
    DEFAULT_PORT,
    DUTY_CYCLE,
    HBM_TOTAL,
    HBM_USAGE,
    WireError,
    chip_holders,
    decode_metric_response,
    per_chip,
    probe,
)
from berth.resources import (
    AllocationStrategy,
    AttachedDevice,
    ComputeDevice,
    DeviceAlloc,
    DiscreteAllocMap,
    DockerArgs,
    HardwareInfo,
    HwStatus,
    Measure,
    allocated_devices,
    device_node,
    per_kernel_measures,
    slot_metadata,
    whole_device_alloc_map,
)
from berth.types import DeviceId, KernelId, SlotName, SlotType

log = logging.getLogger(__name__)

SLOT = SlotName("tpu.device")
CHIP_BOUNDS = {1: "1,1,1", 2: "1,2,1", 4: "2,2,1", 8: "2,4,1"}
_ACCEL_RE = re.compile(r"^accel(\d+)$")
_VFIO_RE = re.compile(r"^(\d+)$")


def scan_chips(dev_root: Path, sys_root: Path) -> list[ComputeDevice]:
    accel = _numbered(dev_root, _ACCEL_RE)
    if accel:
        return [ComputeDevice(DeviceId(f"accel{n}"), f"/dev/accel{n}", _numa(sys_root, n), 0, 1,
                              "TPU", {"index": str(i), "path": f"accel{n}", "kind": "accel"})
                for i, n in enumerate(accel)]
    return [ComputeDevice(DeviceId(f"vfio{n}"), f"/dev/vfio/{n}", None, 0, 1, "TPU",
                          {"index": str(i), "path": f"vfio/{n}", "kind": "vfio"})
            for i, n in enumerate(_numbered(dev_root / "vfio", _VFIO_RE))]


def _numbered(directory: Path, pattern: re.Pattern[str]) -> list[int]:
    if not directory.is_dir():
        return []
    return sorted(int(m.group(1)) for p in directory.iterdir() if (m := pattern.match(p.name)))


def _numa(sys_root: Path, number: int) -> int | None:
    try:
        node = int((sys_root / f"class/accel/accel{number}/device/numa_node").read_text())
    except (OSError, ValueError):
        return None
    return node if node >= 0 else None


class TPUPlugin:
    key: ClassVar[str] = "tpu"
    env_names: ClassVar[frozenset[str]] = frozenset({
        "TPU_VISIBLE_CHIPS", "TPU_CHIPS_PER_PROCESS_BOUNDS", "TPU_PROCESS_BOUNDS"})
    slot_types: ClassVar[Sequence[tuple[SlotName, SlotType]]] = ((SLOT, SlotType.COUNT),)
    require_explicit_allow: ClassVar[bool] = False

    def __init__(self, config: Mapping[str, Any] | None = None) -> None:
        config = config or {}
        self._dev_root = Path(config.get("dev_root", "/dev"))
        self._sys_root = Path(config.get("sys_root", "/sys"))
        self._proc_root = Path(config.get("proc_root", "/proc"))
        self._metrics_port = int(config.get("metrics_port", DEFAULT_PORT))
        self._devices: list[ComputeDevice] = []

    async def init(self) -> None:
        self._devices = scan_chips(self._dev_root, self._sys_root)
        log.info("tpu: %d chip(s)", len(self._devices))

    async def cleanup(self) -> None:
        return None

    def list_devices(self) -> Sequence[ComputeDevice]:
        return tuple(self._devices)

    def available_slots(self) -> dict[SlotName, Decimal]:
        return {SLOT: Decimal(len(self._devices))}

    def create_alloc_map(self) -> DiscreteAllocMap:
        return whole_device_alloc_map(SLOT, self._devices, AllocationStrategy.FILL)

    def _node(self, path: str) -> dict[str, str]:
        return device_node(self._dev_root, path)

    def generate_docker_args(self, device_alloc: DeviceAlloc) -> DockerArgs:
        by_id = {d.device_id: d for d in self._devices}
        chips = sorted((by_id[d] for d in allocated_devices(device_alloc)),
                       key=lambda d: int(d.extra["index"]))
        devices = [self._node(c.extra["path"]) for c in chips]
        if any(c.extra["kind"] == "vfio" for c in chips):
            devices.append(self._node("vfio/vfio"))
        env = {"TPU_VISIBLE_CHIPS": ",".join(c.extra["index"] for c in chips)}
        if len(chips) in CHIP_BOUNDS:
            env |= {"TPU_CHIPS_PER_PROCESS_BOUNDS": CHIP_BOUNDS[len(chips)],
                    "TPU_PROCESS_BOUNDS": "1,1,1"}
        return {"HostConfig": {"Devices": devices}, "Env": env}

    def get_attached_devices(self, device_alloc: DeviceAlloc) -> list[AttachedDevice]:
        return [{"device_id": d, "model_name": "TPU", "data": {}}
                for d in allocated_devices(device_alloc)]

    async def gather_node_measures(self) -> list[Measure]:
        if not self._devices:
            return []
        paths = {str(d.device_id): self._dev_root / d.extra["path"] for d in self._devices}
        holders = await asyncio.to_thread(chip_holders, paths, self._proc_root)
        held = {chip for chips in holders.values() for chip in chips}
        util: dict[str, Decimal] = {chip: Decimal(0) for chip in paths if chip not in held}
        mem: dict[str, Decimal] = {chip: Decimal(0) for chip in util}
        total: dict[str, Decimal] = {}
        for pid, chips in sorted(holders.items()):
            try:
                raw = await probe(pid, self._metrics_port, proc_root=self._proc_root)
                util |= per_chip(decode_metric_response(raw[DUTY_CYCLE]), chips, summed=False)
                mem |= per_chip(decode_metric_response(raw[HBM_USAGE]), chips, summed=True)
                total |= per_chip(decode_metric_response(raw[HBM_TOTAL]), chips, summed=True)
            except (OSError, KeyError, ValueError, WireError) as exc:
                log.debug("tpu: no runtime metrics from pid %d (chips %s): %s", pid, chips, exc)
        return [Measure("tpu_util", "percent", util), Measure("tpu_mem", "bytes", mem, total)]

    async def gather_container_measures(self, allocs: Mapping[KernelId, DeviceAlloc]
                                        ) -> list[Measure]:
        node = {m.key: m.values for m in await self.gather_node_measures()}
        return [m for m in per_kernel_measures(node, allocs, prefix="tpu") if m.values]

    async def get_node_hwinfo(self) -> HardwareInfo:
        status: HwStatus = "healthy" if self._devices else "unavailable"
        return {"status": status, "status_info": None if self._devices else "no TPU chips",
                "metadata": {"chips": str(len(self._devices))}}

    def get_metadata(self) -> dict[str, dict[str, Any]]:
        return {SLOT: slot_metadata(SLOT, human_name="TPU", unit="TPU",
                                    description="Cloud TPU chip", icon="tpu")}

    def extra_info(self) -> dict[str, str]:
        return {}
