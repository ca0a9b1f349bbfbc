"""Allocation maps: which device holds how much of which slot. Pure; no I/O, no awaits.

Two kinds, one interface (`AllocMap`):

* `DiscreteAllocMap` hands out whole units (a GPU, a byte of memory).
* `FractionAllocMap` hands out multiples of a quantum (default 0.01) of each device, and applies
  the fragmentation rule when a request forbids it:
  - a request no larger than one device must sit on a single device;
  - a larger request is split over the fewest devices, k = ceil(amount / device size), in
    near-equal quantum-rounded shares (they differ by at most one quantum);
  - if the free amount would suffice only by splitting otherwise, `FractionalResourceFragmented`.

Strategies, applied inside the device groups given by the affinity order (`affinity.py`):
* FILL: take greedily, in the given order (packs kernels onto the first devices);
* EVENLY: take the fewest most-free devices that cover the request and spread it across them
  in equal units (spreads kernels over the devices, and a kernel over as few as needed).

Every successful `allocate` returns a `DeviceAlloc` that `free` accepts back exactly; on any
error nothing is changed (all-or-nothing).

Overcommit (`FractionAllocMap.overcommit`): each device of a slot offers `ratio` times its
amount to the accounting, while one kernel still takes at most the device's real amount from
it (a kernel asking 1.5 cores gets 1 + 0.5 on two cores, never 1.5 of one), so the CFS quota a
kernel is given (its amount) can always be used. Devices are ordered by their overcommitted
free amount, so kernels spread over the devices.
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from decimal import ROUND_FLOOR, Decimal
from enum import StrEnum

from berth.errors import (
    FractionalResourceFragmented,
    InsufficientResource,
    InvalidArgument,
    NotMultipleOfQuantum,
    ResourceError,
    UnsupportedSlot,
)
from berth.types import DeviceId, SlotName, SlotType

DeviceAlloc = dict[SlotName, dict[DeviceId, Decimal]]
DeviceGroups = Sequence[Sequence[DeviceId]]
ZERO = Decimal(0)


class AllocationStrategy(StrEnum):
    EVENLY = "evenly"
    FILL = "fill"


class AllocationConflict(ResourceError):
    """Applying or freeing an allocation does not match this map (restore over a taken device,
    unknown device, or a free of more than was taken)."""

    def __init__(self, message: str, *, slot: str = "", device_id: str = "") -> None:
        super().__init__(message, slot=slot, device_id=device_id)
        self.slot = slot
        self.device_id = device_id


@dataclass(frozen=True)
class DeviceSlot:
    """What one device offers: `amount` of `slot_name`."""

    slot_name: SlotName
    slot_type: SlotType
    amount: Decimal


class AllocMap(ABC):
    """Per-device ledger of one plugin's slots. Methods never await: each call is atomic."""

    def __init__(self, device_slots: Mapping[DeviceId, DeviceSlot], *,
                 strategy: AllocationStrategy = AllocationStrategy.EVENLY) -> None:
        self.device_slots = dict(device_slots)
        self.strategy = strategy
        self.used: DeviceAlloc = {}
        for device_id, info in self.device_slots.items():
            self.used.setdefault(info.slot_name, {})[device_id] = ZERO

    # -- queries -------------------------------------------------------------------------
    def slot_names(self) -> set[SlotName]:
        return set(self.used)

    def slot_type(self, slot: SlotName) -> SlotType:
        return next(i.slot_type for i in self.device_slots.values() if i.slot_name == slot)

    def total(self, slot: SlotName) -> Decimal:
        return sum((self.device_slots[d].amount for d in self.used.get(slot, {})), ZERO)

    def used_amount(self, slot: SlotName) -> Decimal:
        return sum(self.used.get(slot, {}).values(), ZERO)

    def free_per_device(self, slot: SlotName) -> dict[DeviceId, Decimal]:
        return {d: self.device_slots[d].amount - u for d, u in self.used.get(slot, {}).items()}

    # -- mutation ------------------------------------------------------------------------
    def allocate(self, request: Mapping[SlotName, Decimal], *, groups: DeviceGroups = (),
                 allow_fragmentation: bool = True) -> DeviceAlloc:
        """Take every slot of `request` or nothing; `groups` orders devices by preference."""
        plan: DeviceAlloc = {}
        for slot, amount in request.items():
            if amount == 0:
                continue
            if slot not in self.used:
                raise UnsupportedSlot(slot)
            plan[slot] = self._plan(slot, amount, self._ordered(slot, groups), allow_fragmentation)
        self.apply(plan)
        return plan

    def apply(self, alloc: DeviceAlloc) -> None:
        """Mark `alloc` taken (restore path); raises `AllocationConflict` and changes nothing
        if a device is unknown or would go over its amount."""
        for slot, per_device in alloc.items():
            free = self.free_per_device(slot)
            for device_id, amount in per_device.items():
                if device_id not in free:
                    raise AllocationConflict(f"unknown device {device_id} for {slot}",
                                             slot=slot, device_id=device_id)
                if amount < 0 or amount > free[device_id]:
                    raise AllocationConflict(
                        f"{slot} on {device_id}: {amount} asked, {free[device_id]} free",
                        slot=slot, device_id=device_id)
        self._add(alloc, 1)

    def free(self, alloc: DeviceAlloc) -> None:
        """Give back exactly `alloc`; raises `AllocationConflict` (changing nothing) if it was
        not taken."""
        for slot, per_device in alloc.items():
            used = self.used.get(slot, {})
            for device_id, amount in per_device.items():
                if amount < 0 or used.get(device_id, ZERO) < amount or device_id not in used:
                    raise AllocationConflict(f"freeing {amount} of {slot} on {device_id}, "
                                             f"only {used.get(device_id, ZERO)} taken",
                                             slot=slot, device_id=device_id)
        self._add(alloc, -1)

    def _add(self, alloc: DeviceAlloc, sign: int) -> None:
        for slot, per_device in alloc.items():
            for device_id, amount in per_device.items():
                self.used[slot][device_id] += sign * amount

    def _ordered(self, slot: SlotName, groups: DeviceGroups) -> list[list[DeviceId]]:
        mine = self.used[slot]
        ordered = [[d for d in g if d in mine] for g in groups]
        seen = {d for g in ordered for d in g}
        rest = [d for d in mine if d not in seen]
        return [g for g in [*ordered, rest] if g]

    @abstractmethod
    def _plan(self, slot: SlotName, amount: Decimal, groups: list[list[DeviceId]],
              allow_fragmentation: bool) -> dict[DeviceId, Decimal]: ...

    # -- shared planning helpers ---------------------------------------------------------
    def _insufficient(self, slot: SlotName, amount: Decimal, free: Mapping[DeviceId, Decimal]
                      ) -> None:
        available = sum(free.values(), ZERO)
        if amount > available:
            raise InsufficientResource(slot, amount, available)

    def _preference(self, groups: list[list[DeviceId]], free: Mapping[DeviceId, Decimal]
                    ) -> list[DeviceId]:
        if self.strategy is AllocationStrategy.FILL:
            return [d for g in groups for d in g]
        return [d for g in groups for d in sorted(g, key=lambda d: -free[d])]

    def _take(self, amount: Decimal, order: list[DeviceId], free: Mapping[DeviceId, Decimal],
              unit: Decimal) -> dict[DeviceId, Decimal]:
        if self.strategy is AllocationStrategy.FILL:
            return _greedy(amount, order, free)
        return _spread_over_fewest(amount, order, free, unit)


class DiscreteAllocMap(AllocMap):
    """Whole units per device (counts and bytes). `unique` slots allow exactly one unit."""

    def _plan(self, slot: SlotName, amount: Decimal, groups: list[list[DeviceId]],
              allow_fragmentation: bool) -> dict[DeviceId, Decimal]:
        if amount != amount.to_integral_value():
            raise NotMultipleOfQuantum(f"{slot} needs whole units, got {amount}",
                                       slot=slot, requested=amount, quantum=Decimal(1))
        if self.slot_type(slot) is SlotType.UNIQUE and amount != 1:
            raise InvalidArgument(f"unique slot takes exactly 1, got {amount}",
                                  field=f"resource_slots.{slot}")
        free = self.free_per_device(slot)
        self._insufficient(slot, amount, free)
        return self._take(amount, self._preference(groups, free), free, Decimal(1))


class FractionAllocMap(AllocMap):
    """Quantum-sized shares of devices. `fragmentation` overrides the per-request option
    when set (the cpu plugin always allows it: CFS quota does not care which core)."""

    def __init__(self, device_slots: Mapping[DeviceId, DeviceSlot], *,
                 strategy: AllocationStrategy = AllocationStrategy.EVENLY,
                 quantum: Decimal = Decimal("0.01"), fragmentation: bool | None = None) -> None:
        super().__init__(device_slots, strategy=strategy)
        self.quantum = quantum
        self.fragmentation = fragmentation
        # device → the most one kernel may take from it (its real amount), when overcommitted
        self.per_kernel: dict[DeviceId, Decimal] = {}

    def overcommit(self, slot: SlotName, ratio: Decimal) -> None:
        """Offer `ratio` × each device's amount of `slot` to the accounting (ratio ≥ 1, set
        before anything is allocated); one kernel still gets at most the real amount."""
        if ratio < 1:
            raise InvalidArgument(f"overcommit ratio {ratio} is below 1", field="ratio")
        for device_id, info in list(self.device_slots.items()):
            if info.slot_name == slot:
                self.per_kernel[device_id] = info.amount
                self.device_slots[device_id] = DeviceSlot(slot, info.slot_type,
                                                          info.amount * ratio)

    def _plan(self, slot: SlotName, amount: Decimal, groups: list[list[DeviceId]],
              allow_fragmentation: bool) -> dict[DeviceId, Decimal]:
        if amount % self.quantum != 0:
            raise NotMultipleOfQuantum(f"{slot}: {amount} is not a multiple of {self.quantum}",
                                       slot=slot, requested=amount, quantum=self.quantum)
        free = self.free_per_device(slot)
        order = self._preference(groups, free)
        free = self._capped(free)
        self._insufficient(slot, amount, free)
        allowed = allow_fragmentation if self.fragmentation is None else self.fragmentation
        if allowed:
            return self._take(amount, order, free, self.quantum)
        return self._unfragmented(slot, amount, order, free)

    def _capped(self, free: Mapping[DeviceId, Decimal]) -> dict[DeviceId, Decimal]:
        """What one kernel may take from each device: its free amount, at most its real one."""
        cap = self.per_kernel
        return {d: min(f, cap[d]) if d in cap else f for d, f in free.items()}

    def _unfragmented(self, slot: SlotName, amount: Decimal, order: list[DeviceId],
                      free: Mapping[DeviceId, Decimal]) -> dict[DeviceId, Decimal]:
        size = max(self.per_kernel.get(d, self.device_slots[d].amount) for d in order)
        count = max(1, math.ceil(amount / size))
        shares = _equal_shares(amount, count, self.quantum)
        fits = [d for d in order if free[d] >= shares[-1]]
        chosen = sorted(fits[:count] if self.strategy is AllocationStrategy.FILL else
                        sorted(fits, key=lambda d: -free[d])[:count],
                        key=lambda d: -free[d])
        if len(chosen) < count or any(free[d] < s for d, s in zip(chosen, shares, strict=True)):
            raise FractionalResourceFragmented(
                f"{slot}: {amount} is free only in fragments (needs {count} device(s) "
                f"with {shares[0]} each)", slot=slot, requested=amount,
                available=sum(free.values(), ZERO))
        return dict(zip(chosen, shares, strict=True))


def _greedy(amount: Decimal, order: list[DeviceId], free: Mapping[DeviceId, Decimal]
            ) -> dict[DeviceId, Decimal]:
    taken: dict[DeviceId, Decimal] = {}
    for device_id in order:
        if amount == 0:
            break
        part = min(amount, free[device_id])
        if part > 0:
            taken[device_id] = part
            amount -= part
    return taken


def _spread_over_fewest(amount: Decimal, order: list[DeviceId],
                        free: Mapping[DeviceId, Decimal], unit: Decimal
                        ) -> dict[DeviceId, Decimal]:
    """The shortest prefix of `order` whose free covers `amount`, water-filled in `unit`s."""
    prefix: list[DeviceId] = []
    covered = ZERO
    for device_id in order:
        if covered >= amount:
            break
        if free[device_id] >= unit:
            prefix.append(device_id)
            covered += free[device_id]
    return _water_fill(amount, prefix, free, unit)


def _water_fill(amount: Decimal, devices: list[DeviceId], free: Mapping[DeviceId, Decimal],
                unit: Decimal) -> dict[DeviceId, Decimal]:
    taken = {d: ZERO for d in devices}
    active = list(devices)
    while amount > 0 and active:
        share = (amount / len(active) / unit).to_integral_value(rounding=ROUND_FLOOR) * unit
        if share == 0:
            for device_id in active[: int(amount / unit)]:
                taken[device_id] += unit
                amount -= unit
            break
        for device_id in active:
            part = min(share, free[device_id] - taken[device_id])
            taken[device_id] += part
            amount -= part
        active = [d for d in active if free[d] - taken[d] >= unit]
    return {d: a for d, a in taken.items() if a > 0}


def _equal_shares(amount: Decimal, count: int, quantum: Decimal) -> list[Decimal]:
    """`amount` split in `count` quantum multiples that differ by at most one quantum,
    largest first: 1.00 over 3 → [0.34, 0.33, 0.33]."""
    units = int(amount / quantum)
    base, extra = divmod(units, count)
    return [(base + (1 if i < extra else 0)) * quantum for i in range(count)]
