"""The node's resource ledger: which kernel holds which slots on which devices.

`ResourceManager` is owned by the agent. Every public method is synchronous and never awaits,
so under asyncio each call is atomic; a `threading.Lock` also makes it safe from executor
threads. Allocation walks the plugins in the allocation order, feeding the NUMA nodes of the
devices chosen so far as the affinity hint of the next plugin, and rolls back everything on the
first error.

Capacity is enforced twice: per device (the alloc maps) and per slot (device totals minus the
reserved amounts, e.g. `reserved-cpu`), so a kernel can never be promised what the host keeps.

An overcommit ratio R for a fractional slot (`[resource] cpu-overcommit-ratio`) is Kubernetes'
requests and limits with a fixed proportion: a kernel's amount stays its limit (its CFS quota),
and it is accounted as a request of amount / R, so the node promises (total − reserved) × R and
mostly idle kernels share cores. Everything reported (`total_slots`, `available_slots`, the
heartbeat) is in the same overcommitted units as the kernels' amounts.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

from berth.errors import InsufficientResource, InvalidArgument, PluginError, UnsupportedSlot
from berth.resources.affinity import AffinityPolicy, device_groups, nodes_of
from berth.resources.alloc import AllocationConflict, AllocMap, DeviceAlloc, FractionAllocMap
from berth.resources.docker_args import DockerArgs, merge_docker_args
from berth.resources.plugin import AttachedDevice, ComputePlugin, device_nodes
from berth.resources.slots import (
    ResourceSlots,
    add_slots,
    capacity,
    is_accelerator_slot,
    parse_slots,
    slots_from_json,
    slots_to_json,
)
from berth.types import DeviceId, KernelId, SlotName, SlotType

log = logging.getLogger(__name__)

DEFAULT_ALLOCATION_ORDER: tuple[str, ...] = ("cuda", "rocm", "tpu", "mock", "cpu", "mem")
ZERO = Decimal(0)


@dataclass(frozen=True)
class AllocationOptions:
    """Per-kernel options (`resource_opts`)."""

    allow_fractional_resource_fragmentation: bool = True

    @classmethod
    def from_resource_opts(cls, opts: Mapping[str, Any] | None) -> AllocationOptions:
        raw = (opts or {}).get("allow_fractional_resource_fragmentation", True)
        return cls(allow_fractional_resource_fragmentation=bool(raw))


@dataclass(frozen=True)
class KernelAllocation:
    """What one kernel holds: requested slots and, per plugin key, slot → device → amount."""

    kernel_id: KernelId
    requested: ResourceSlots
    devices: Mapping[str, DeviceAlloc] = field(default_factory=dict)

    def taken(self) -> ResourceSlots:
        """Sum per slot of what the devices hold (equals `requested` minus zero entries)."""
        return add_slots(*({slot: sum(per.values(), ZERO) for slot, per in alloc.items()}
                           for alloc in self.devices.values()))

    def device_ids(self, plugin_key: str) -> list[DeviceId]:
        alloc = self.devices.get(plugin_key, {})
        return sorted({d for per in alloc.values() for d, a in per.items() if a > 0})

    def to_json(self) -> dict[str, Any]:
        return {
            "kernel_id": str(self.kernel_id),
            "requested": slots_to_json(self.requested),
            "devices": {key: {slot: {dev: str(a) for dev, a in per.items()}
                              for slot, per in alloc.items()}
                        for key, alloc in self.devices.items()},
        }

    @classmethod
    def from_json(cls, raw: Mapping[str, Any]) -> KernelAllocation:
        try:
            return cls(
                kernel_id=KernelId(raw["kernel_id"]),
                requested=slots_from_json(raw["requested"]),
                devices={key: {SlotName(slot): {DeviceId(dev): Decimal(a)
                                                for dev, a in per.items()}
                               for slot, per in alloc.items()}
                         for key, alloc in raw["devices"].items()},
            )
        except (KeyError, TypeError, AttributeError, ArithmeticError) as exc:
            raise InvalidArgument(f"malformed allocation record: {exc!r}",
                                  field="allocation") from None


class ResourceManager:
    def __init__(self, plugins: Sequence[ComputePlugin], *,
                 reserved: Mapping[SlotName, Decimal] | None = None,
                 allocation_order: Sequence[str] = DEFAULT_ALLOCATION_ORDER,
                 affinity_policy: AffinityPolicy = AffinityPolicy.INTERLEAVED,
                 overcommit: Mapping[SlotName, Decimal] | None = None) -> None:
        self._plugins = _ordered_plugins(plugins, allocation_order)
        self._maps: dict[str, AllocMap] = {p.key: p.create_alloc_map() for p in self._plugins}
        self._numa = {p.key: device_nodes(p.list_devices()) for p in self._plugins}
        self._slot_owner = {slot: key for key, m in self._maps.items() for slot in m.slot_names()}
        self._overcommit = {s: r for s, r in (overcommit or {}).items()
                            if r != 1 and s in self._slot_owner}
        for slot, ratio in self._overcommit.items():
            alloc_map = self._maps[self._slot_owner[slot]]
            if not isinstance(alloc_map, FractionAllocMap):
                raise InvalidArgument(f"slot {slot} is not fractional: it cannot be overcommitted",
                                      field="overcommit")
            alloc_map.overcommit(slot, ratio)
        self._reserved = {s: a * self._overcommit.get(s, Decimal(1))
                          for s, a in (reserved or {}).items()}
        self._policy = affinity_policy
        self._kernels: dict[KernelId, KernelAllocation] = {}
        self._lock = threading.Lock()

    # -- queries -------------------------------------------------------------------------
    @property
    def plugins(self) -> Sequence[ComputePlugin]:
        return tuple(self._plugins)

    def overcommit_ratio(self, slot: SlotName) -> Decimal:
        """How many times its real amount the node promises of `slot` (1: no overcommit)."""
        return self._overcommit.get(slot, Decimal(1))

    def slot_types(self) -> dict[SlotName, SlotType]:
        return {slot: self._maps[key].slot_type(slot) for slot, key in self._slot_owner.items()}

    def total_slots(self) -> ResourceSlots:
        """What the node promises (device totals minus reserved); the heartbeat's slots."""
        return capacity({s: self._maps[k].total(s) for s, k in self._slot_owner.items()},
                        self._reserved)

    def used_slots(self) -> ResourceSlots:
        with self._lock:
            return {s: self._maps[k].used_amount(s) for s, k in self._slot_owner.items()}

    def available_slots(self) -> ResourceSlots:
        total, used = self.total_slots(), self.used_slots()
        return {s: max(ZERO, total[s] - used[s]) for s in total}

    def get(self, kernel_id: KernelId) -> KernelAllocation | None:
        return self._kernels.get(kernel_id)

    def allocations(self) -> dict[KernelId, KernelAllocation]:
        return dict(self._kernels)

    # -- mutation ------------------------------------------------------------------------
    def allocate(self, kernel_id: KernelId, requested: Mapping[str, object],
                 opts: AllocationOptions | None = None) -> KernelAllocation:
        """All or nothing. Raises UnsupportedSlot, InsufficientResource (slot, requested,
        available), NotMultipleOfQuantum, FractionalResourceFragmented, AllocationConflict
        (kernel already holds an allocation)."""
        return self.allocate_slots(kernel_id, parse_slots(requested, self.slot_types()), opts)

    def allocate_slots(self, kernel_id: KernelId, slots: Mapping[SlotName, Decimal],
                       opts: AllocationOptions | None = None) -> KernelAllocation:
        """`allocate` for amounts already parsed (a kernel spec's): a slot this node does not
        offer raises UnsupportedSlot, or is dropped when its amount is 0."""
        offered = self.slot_types()
        for slot, amount in slots.items():
            if slot not in offered and amount != 0:
                raise UnsupportedSlot(slot)
        slots = {s: a for s, a in slots.items() if s in offered}
        options = opts or AllocationOptions()
        with self._lock:
            if kernel_id in self._kernels:
                raise AllocationConflict(f"kernel {kernel_id} already holds resources")
            self._check_budget(slots)
            allocation = KernelAllocation(kernel_id, slots, self._take(slots, options))
            self._kernels[kernel_id] = allocation
        log.info("allocated %s to kernel %s", slots_to_json(allocation.taken()), kernel_id)
        return allocation

    def free(self, kernel_id: KernelId) -> KernelAllocation | None:
        """Give back everything the kernel holds and return it; None if it held nothing."""
        with self._lock:
            allocation = self._kernels.pop(kernel_id, None)
            if allocation is None:
                return None
            for key, alloc in allocation.devices.items():
                self._maps[key].free(alloc)
        log.info("freed %s from kernel %s", slots_to_json(allocation.taken()), kernel_id)
        return allocation

    def restore(self, kernel_id: KernelId, allocation: KernelAllocation) -> None:
        """Re-apply a ledger record exactly (agent restart). Raises AllocationConflict, changing
        nothing, if the kernel is already known, a device vanished or is already taken. Going
        over a slot budget (reserved amounts changed) is logged, not refused: the kernel runs."""
        if allocation.kernel_id != kernel_id:
            raise AllocationConflict(f"record of {allocation.kernel_id} restored as {kernel_id}")
        with self._lock:
            if kernel_id in self._kernels:
                raise AllocationConflict(f"kernel {kernel_id} already holds resources")
            self._apply_all(allocation)
            self._kernels[kernel_id] = allocation
        over = [s for s, a in self.available_slots().items() if a == 0]
        log.info("restored allocation of kernel %s%s", kernel_id,
                 f" (slots now exhausted: {over})" if over else "")

    # -- docker and reporting ------------------------------------------------------------
    def docker_args(self, allocation: KernelAllocation) -> DockerArgs:
        """`{"HostConfig": {...}, "Env": {...}}` merged from every plugin holding a share."""
        return merge_docker_args({"HostConfig": {}, "Env": {}}, *(
            plugin.generate_docker_args(alloc) for plugin in self._plugins
            if (alloc := allocation.devices.get(plugin.key))))

    def attached_devices(self, allocation: KernelAllocation) -> dict[str, list[AttachedDevice]]:
        return {p.key: p.get_attached_devices(allocation.devices[p.key])
                for p in self._plugins if allocation.devices.get(p.key)}

    def scan_gpu_alloc_map(self) -> dict[str, str]:
        """`{device_id: str(amount)}` of accelerator slots held by kernels (RPC shape)."""
        totals: dict[str, Decimal] = {}
        for allocation in self.allocations().values():
            for alloc in allocation.devices.values():
                for slot, per in alloc.items():
                    if is_accelerator_slot(slot):
                        for dev, amount in per.items():
                            totals[dev] = totals.get(dev, ZERO) + amount
        return {dev: str(amount) for dev, amount in totals.items()}

    # -- internals -----------------------------------------------------------------------
    def _check_budget(self, slots: ResourceSlots) -> None:
        total = self.total_slots()
        for slot, amount in slots.items():
            used = self._maps[self._slot_owner[slot]].used_amount(slot)
            if used + amount > total[slot]:
                raise InsufficientResource(slot, amount, max(ZERO, total[slot] - used))

    def _take(self, slots: ResourceSlots, options: AllocationOptions) -> dict[str, DeviceAlloc]:
        taken: dict[str, DeviceAlloc] = {}
        hint: set[int] = set()
        try:
            for plugin in self._plugins:
                alloc = self._take_one(plugin.key, slots, options, hint)
                if alloc:
                    taken[plugin.key] = alloc
                    hint |= nodes_of(self._numa[plugin.key],
                                     {d for per in alloc.values() for d in per})
        except BaseException:
            for key, alloc in taken.items():
                self._maps[key].free(alloc)
            raise
        return taken

    def _take_one(self, key: str, slots: ResourceSlots, options: AllocationOptions,
                  hint: set[int]) -> DeviceAlloc:
        alloc_map = self._maps[key]
        mine = {s: a for s, a in slots.items() if self._slot_owner[s] == key and a > 0}
        if not mine:
            return {}
        free = {d: f for s in mine for d, f in alloc_map.free_per_device(s).items()}
        groups = device_groups(self._numa[key], self._policy, hint, free)
        return alloc_map.allocate(
            mine, groups=groups,
            allow_fragmentation=options.allow_fractional_resource_fragmentation)

    def _apply_all(self, allocation: KernelAllocation) -> None:
        applied: list[tuple[str, DeviceAlloc]] = []
        try:
            for key, alloc in allocation.devices.items():
                if key not in self._maps:
                    raise AllocationConflict(f"plugin {key!r} is not loaded", slot=key)
                self._maps[key].apply(alloc)
                applied.append((key, alloc))
        except BaseException:
            for key, alloc in applied:
                self._maps[key].free(alloc)
            raise


def _ordered_plugins(plugins: Sequence[ComputePlugin], order: Sequence[str]
                     ) -> list[ComputePlugin]:
    keys = [p.key for p in plugins]
    if len(set(keys)) != len(keys):
        raise PluginError(f"duplicate plugin keys: {keys}")
    rank = {key: i for i, key in enumerate(order)}
    return sorted(plugins, key=lambda p: (rank.get(p.key, len(rank)), p.key))
