"""`cuda` accelerator through NVML (nvidia-ml-py). The only module that imports pynvml.

Devices are NVML indices ("0", "1", …); slot `cuda.device` (whole GPUs). A host without the
driver (NVML library missing, no GPU) reports zero devices and one log line, not an error.
Containers get `DeviceRequests` (driver `nvidia`, the allocated indices, compute+utility) and
`CUDA_VISIBLE_DEVICES=0..k-1`: the nvidia runtime renumbers the k passed GPUs from zero inside
the container, so host indices would point at nothing; the host indices are kept in
`BERTH_CUDA_GLOBAL_DEVICE_IDS` (`local:global,…`, as Backend.AI's CUDA_GLOBAL_DEVICE_IDS).
Config: `device_mask` (list of UUIDs to hide), `sys_root` (for PCI NUMA nodes).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from decimal import Decimal
from pathlib import Path
from types import ModuleType
from typing import Any, ClassVar

from berth.resources import (
    AllocationStrategy,
    AttachedDevice,
    ComputeDevice,
    DeviceAlloc,
    DiscreteAllocMap,
    DockerArgs,
    HardwareInfo,
    Measure,
    allocated_devices,
    per_kernel_measures,
    slot_metadata,
    whole_device_alloc_map,
)
from berth.types import DeviceId, KernelId, SlotName, SlotType

log = logging.getLogger(__name__)

SLOT = SlotName("cuda.device")


def _text(value: str | bytes) -> str:
    return value.decode() if isinstance(value, bytes) else value


def sysfs_pci_address(bus_id: str) -> str:
    """NVML's `00000000:17:00.0` → sysfs's `0000:17:00.0`."""
    bus_id = bus_id.lower()
    domain, _, rest = bus_id.partition(":")
    return f"{domain[-4:]}:{rest}" if rest else bus_id


class CUDAPlugin:
    key: ClassVar[str] = "cuda"
    env_names: ClassVar[frozenset[str]] = frozenset({"CUDA_VISIBLE_DEVICES",
                                                     "BERTH_CUDA_GLOBAL_DEVICE_IDS"})
    slot_types: ClassVar[Sequence[tuple[SlotName, SlotType]]] = ((SLOT, SlotType.COUNT),)
    require_explicit_allow: ClassVar[bool] = False

    def __init__(self, config: Mapping[str, Any] | None = None,
                 nvml: ModuleType | Any | None = None) -> None:
        config = config or {}
        self._mask = {str(u) for u in config.get("device_mask", [])}
        self._sys_root = Path(config.get("sys_root", "/sys"))
        self._nvml = nvml
        self._ready = False
        self._status_info: str | None = None
        self._devices: list[ComputeDevice] = []
        self._driver = ""
        self._cuda_version = ""

    async def init(self) -> None:
        nvml = self._nvml
        if nvml is None:
            import pynvml
            nvml = self._nvml = pynvml
        try:
            nvml.nvmlInit()
        except nvml.NVMLError as exc:
            self._status_info = f"NVML unavailable: {exc}"
            log.info("cuda: no NVIDIA driver (%s); 0 devices", exc)
            return
        self._ready = True
        self._driver = _text(nvml.nvmlSystemGetDriverVersion())
        cuda = int(nvml.nvmlSystemGetCudaDriverVersion())
        self._cuda_version = f"{cuda // 1000}.{cuda % 1000 // 10}"
        self._devices = [d for d in map(self._scan, range(nvml.nvmlDeviceGetCount()))
                         if d.extra["uuid"] not in self._mask]
        log.info("cuda: %d device(s), driver %s, CUDA %s", len(self._devices), self._driver,
                 self._cuda_version)

    def _scan(self, index: int) -> ComputeDevice:
        nvml = self._nvml
        assert nvml is not None
        handle = nvml.nvmlDeviceGetHandleByIndex(index)
        pci = sysfs_pci_address(_text(nvml.nvmlDeviceGetPciInfo(handle).busId))
        return ComputeDevice(
            DeviceId(str(index)), pci, self._numa_node(handle, pci),
            int(nvml.nvmlDeviceGetMemoryInfo(handle).total), self._gpu_cores(handle),
            _text(nvml.nvmlDeviceGetName(handle)),
            {"uuid": _text(nvml.nvmlDeviceGetUUID(handle)), "index": str(index)})

    def _numa_node(self, handle: Any, pci: str) -> int | None:
        path = self._sys_root / "bus/pci/devices" / pci / "numa_node"
        try:
            node = int(path.read_text())
        except (OSError, ValueError):
            nvml = self._nvml
            assert nvml is not None
            try:
                node = int(nvml.nvmlDeviceGetNumaNodeId(handle))
            except nvml.NVMLError:
                return None
        return node if node >= 0 else None

    def _gpu_cores(self, handle: Any) -> int:
        nvml = self._nvml
        assert nvml is not None
        try:
            return int(nvml.nvmlDeviceGetNumGpuCores(handle))
        except nvml.NVMLError:
            return 0

    async def cleanup(self) -> None:
        if self._ready and self._nvml is not None:
            self._nvml.nvmlShutdown()
            self._ready = False

    def list_devices(self) -> Sequence[ComputeDevice]:
        return tuple(self._devices)

    def available_slots(self) -> dict[SlotName, Decimal]:
        return {SLOT: Decimal(len(self._devices))}

    def create_alloc_map(self) -> DiscreteAllocMap:
        return whole_device_alloc_map(SLOT, self._devices, AllocationStrategy.EVENLY)

    def generate_docker_args(self, device_alloc: DeviceAlloc) -> DockerArgs:
        ids = sorted(allocated_devices(device_alloc), key=int)
        return {
            "HostConfig": {"DeviceRequests": [{"Driver": "nvidia", "DeviceIDs": ids,
                                               "Capabilities": [["compute", "utility"]]}]},
            "Env": {"CUDA_VISIBLE_DEVICES": ",".join(str(i) for i in range(len(ids))),
                    "BERTH_CUDA_GLOBAL_DEVICE_IDS": ",".join(f"{i}:{d}"
                                                             for i, d in enumerate(ids))},
        }

    def get_attached_devices(self, device_alloc: DeviceAlloc) -> list[AttachedDevice]:
        by_id = {d.device_id: d for d in self._devices}
        return [{"device_id": d, "model_name": by_id[d].device_name,
                 "data": {"smp": by_id[d].processing_units, "mem": by_id[d].memory_size}}
                for d in allocated_devices(device_alloc) if d in by_id]

    async def gather_node_measures(self) -> list[Measure]:
        util: dict[str, Decimal] = {}
        mem: dict[str, Decimal] = {}
        mem_total: dict[str, Decimal] = {}
        temp: dict[str, Decimal] = {}
        power: dict[str, Decimal] = {}
        for device in self._devices if self._ready else []:
            nvml = self._nvml
            assert nvml is not None
            handle = nvml.nvmlDeviceGetHandleByIndex(int(device.device_id))
            did = device.device_id
            util[did] = Decimal(nvml.nvmlDeviceGetUtilizationRates(handle).gpu)
            info = nvml.nvmlDeviceGetMemoryInfo(handle)
            mem[did], mem_total[did] = Decimal(info.used), Decimal(info.total)
            temp[did] = Decimal(nvml.nvmlDeviceGetTemperature(handle, nvml.NVML_TEMPERATURE_GPU))
            power[did] = Decimal(nvml.nvmlDeviceGetPowerUsage(handle)) / 1000  # mW → W
        return [Measure("cuda_util", "percent", util), Measure("cuda_mem", "bytes", mem, mem_total),
                Measure("cuda_temp", "celsius", temp), Measure("cuda_power", "watts", power)]

    async def gather_container_measures(self, allocs: Mapping[KernelId, DeviceAlloc]
                                        ) -> list[Measure]:
        node = {m.key: m.values for m in await self.gather_node_measures()}
        return per_kernel_measures(node, allocs, prefix="cuda")

    async def get_node_hwinfo(self) -> HardwareInfo:
        if not self._ready:
            return {"status": "unavailable", "status_info": self._status_info, "metadata": {}}
        return {"status": "healthy", "status_info": None,
                "metadata": {"driver_version": self._driver, "cuda_version": self._cuda_version,
                             "devices": str(len(self._devices)),
                             "models": ",".join(sorted({d.device_name for d in self._devices}))}}

    def get_metadata(self) -> dict[str, dict[str, Any]]:
        return {SLOT: slot_metadata(SLOT, human_name="GPU", unit="GPU",
                                    description="CUDA-capable GPU", icon="gpu1")}

    def extra_info(self) -> dict[str, str]:
        return {"cuda_support": str(self._ready), "nvidia_version": self._driver,
                "cuda_version": self._cuda_version}
