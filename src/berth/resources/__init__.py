"""Resource slots, allocation maps, NUMA affinity and the node's resource ledger."""

from berth.resources.affinity import AffinityPolicy, device_groups
from berth.resources.alloc import (
    AllocationConflict,
    AllocationStrategy,
    AllocMap,
    DeviceAlloc,
    DeviceSlot,
    DiscreteAllocMap,
    FractionAllocMap,
)
from berth.resources.allocator import (
    DEFAULT_ALLOCATION_ORDER,
    AllocationOptions,
    KernelAllocation,
    ResourceManager,
)
from berth.resources.slots import (
    ResourceSlots,
    capacity,
    format_binary_size,
    parse_binary_size,
    parse_slots,
    slots_from_json,
    slots_to_json,
)

__all__ = [
    "DEFAULT_ALLOCATION_ORDER",
    "AffinityPolicy",
    "AllocMap",
    "AllocationConflict",
    "AllocationOptions",
    "AllocationStrategy",
    "DeviceAlloc",
    "DeviceSlot",
    "DiscreteAllocMap",
    "FractionAllocMap",
    "KernelAllocation",
    "ResourceManager",
    "ResourceSlots",
    "capacity",
    "device_groups",
    "format_binary_size",
    "parse_binary_size",
    "parse_slots",
    "slots_from_json",
    "slots_to_json",
]
