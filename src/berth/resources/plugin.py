"""The compute-plugin role: what every accelerator (and the intrinsic cpu/mem) provides.

Lifecycle: the loader builds a plugin with `Plugin(config)` (a plain dict from agent.toml
`[plugins.<key>]`), awaits `init()` (device scan; may do I/O), and at shutdown `cleanup()`.
After `init()`, `list_devices()`, `available_slots()` and `create_alloc_map()` answer from the
scan without I/O. Device allocations (`DeviceAlloc`: slot → device → amount) come back from
the allocator; the plugin turns them into Docker arguments, attached-device descriptions and
per-kernel measures.

Slot names of a plugin start with `{key}.` (the intrinsic `cpu` and `mem` are the exception).
Measure keys start with `{key}_` (`cuda_util`, `cuda_mem`, …).

A plugin may name the variables its `Env` sets in an optional class attribute
`env_names: ClassVar[frozenset[str]]`: they are then the plugin's on every kernel of the node,
and a kernel spec's value for one is dropped even when the plugin gave that kernel no device
(see :func:`plugin_env_names`).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar, Literal, Protocol, TypedDict, runtime_checkable

from berth.resources.docker_args import DockerArgs

if TYPE_CHECKING:  # resources imports this module at runtime; keep the edge one-way
    from berth.resources.alloc import AllocationStrategy, AllocMap, DeviceAlloc, DiscreteAllocMap
from berth.types import DeviceId, KernelId, SlotName, SlotType

HwStatus = Literal["healthy", "degraded", "offline", "unavailable"]


class HardwareInfo(TypedDict):
    """One entry of the `gather_hwinfo` RPC result."""

    status: HwStatus
    status_info: str | None
    metadata: dict[str, str]


class AttachedDevice(TypedDict):
    device_id: str
    model_name: str
    data: dict[str, Any]


@dataclass(frozen=True)
class ComputeDevice:
    """One device as a plugin sees it. `extra` carries plugin-specific facts (index, paths)."""

    device_id: DeviceId
    hw_location: str
    numa_node: int | None
    memory_size: int
    processing_units: int
    device_name: str
    extra: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class Measure:
    """One metric; `values` keyed by device id (node measures) or kernel id (container
    measures); `capacity` optional per key (e.g. total memory)."""

    key: str
    unit: Literal["percent", "bytes", "celsius", "watts", "count"]
    values: Mapping[str, Decimal]
    capacity: Mapping[str, Decimal] = field(default_factory=dict)


@runtime_checkable
class ComputePlugin(Protocol):
    key: ClassVar[str]
    slot_types: ClassVar[Sequence[tuple[SlotName, SlotType]]]
    require_explicit_allow: ClassVar[bool]

    async def init(self) -> None: ...

    async def cleanup(self) -> None: ...

    def list_devices(self) -> Sequence[ComputeDevice]: ...

    def available_slots(self) -> dict[SlotName, Decimal]: ...

    def create_alloc_map(self) -> AllocMap: ...

    def generate_docker_args(self, device_alloc: DeviceAlloc) -> DockerArgs: ...

    def get_attached_devices(self, device_alloc: DeviceAlloc) -> list[AttachedDevice]: ...

    async def gather_node_measures(self) -> list[Measure]: ...

    async def gather_container_measures(self, allocs: Mapping[KernelId, DeviceAlloc]
                                        ) -> list[Measure]: ...

    async def get_node_hwinfo(self) -> HardwareInfo: ...

    def get_metadata(self) -> dict[str, dict[str, Any]]: ...

    def extra_info(self) -> dict[str, str]: ...


def plugin_env_names(plugins: Sequence[object]) -> frozenset[str]:
    """The variables the given plugins declare as theirs (the optional ``env_names``)."""
    names: set[str] = set()
    for plugin in plugins:
        names.update(getattr(plugin, "env_names", ()))
    return frozenset(names)


def allocated_devices(device_alloc: DeviceAlloc) -> list[DeviceId]:
    """Device ids with a nonzero amount, in first-seen order."""
    seen: dict[DeviceId, None] = {}
    for per_device in device_alloc.values():
        for device_id, amount in per_device.items():
            if amount > 0:
                seen.setdefault(device_id)
    return list(seen)


def total_per_device(device_alloc: DeviceAlloc) -> dict[DeviceId, Decimal]:
    totals: dict[DeviceId, Decimal] = {}
    for per_device in device_alloc.values():
        for device_id, amount in per_device.items():
            totals[device_id] = totals.get(device_id, Decimal(0)) + amount
    return totals


def slot_metadata(slot: SlotName, *, human_name: str, unit: str, description: str,
                  binary: bool = False, round_length: int = 0, icon: str = "") -> dict[str, Any]:
    """Backend.AI's `computer.metadata` entry shape for one slot."""
    return {"slot_name": slot, "description": description, "human_readable_name": human_name,
            "display_unit": unit, "number_format": {"binary": binary, "round_length": round_length},
            "display_icon": icon}


def device_nodes(devices: Sequence[ComputeDevice]) -> dict[DeviceId, int | None]:
    return {d.device_id: d.numa_node for d in devices}


def per_kernel_measures(node: Mapping[str, Mapping[str, Decimal]],
                        allocs: Mapping[KernelId, DeviceAlloc], *, prefix: str) -> list[Measure]:
    """Per-kernel figures from per-device ones: mean utilisation, summed memory and power
    over the kernel's devices (a device shared by kernels is counted for each)."""
    util, mem, power = node.get(f"{prefix}_util", {}), node.get(f"{prefix}_mem", {}), \
        node.get(f"{prefix}_power", {})
    out_util: dict[str, Decimal] = {}
    out_mem: dict[str, Decimal] = {}
    out_power: dict[str, Decimal] = {}
    for kernel_id, alloc in allocs.items():
        devs = [d for d in allocated_devices(alloc) if d in util]
        if devs:
            out_util[kernel_id] = sum((util[d] for d in devs), Decimal(0)) / len(devs)
            out_mem[kernel_id] = sum((mem.get(d, Decimal(0)) for d in devs), Decimal(0))
            out_power[kernel_id] = sum((power.get(d, Decimal(0)) for d in devs), Decimal(0))
    return [Measure(f"{prefix}_util", "percent", out_util),
            Measure(f"{prefix}_mem", "bytes", out_mem),
            Measure(f"{prefix}_power", "watts", out_power)]


def whole_device_alloc_map(slot: SlotName, devices: Sequence[ComputeDevice],
                           strategy: AllocationStrategy) -> DiscreteAllocMap:
    """One whole unit of ``slot`` per device: the map of cuda, rocm and tpu devices."""
    from berth.resources.alloc import DeviceSlot, DiscreteAllocMap

    return DiscreteAllocMap({d.device_id: DeviceSlot(slot, SlotType.COUNT, Decimal(1))
                             for d in devices}, strategy=strategy)


def device_node(dev_root: Path, path: str) -> dict[str, str]:
    """A Docker ``Devices`` entry passing host ``{dev_root}/{path}`` as ``/dev/{path}``."""
    return {"PathOnHost": str(dev_root / path), "PathInContainer": f"/dev/{path}",
            "CgroupPermissions": "rwm"}
