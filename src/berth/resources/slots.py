"""Slot arithmetic: parsing, binary sizes and capacity, all in Decimal and without I/O.

A *slot* is a named, typed quantity a node offers (`cpu`, `mem`, `cuda.device`, `mock.shares`).
`ResourceSlots` maps slot names to Decimal amounts; every function here takes values and
returns new values.
"""

from __future__ import annotations

from collections.abc import Mapping
from decimal import Decimal, InvalidOperation

from berth import units
from berth.errors import InvalidArgument, UnsupportedSlot
from berth.types import SlotName, SlotType

ResourceSlots = dict[SlotName, Decimal]

INTRINSIC_SLOTS: tuple[SlotName, ...] = (SlotName("cpu"), SlotName("mem"))
# What every node offers, by type: what a spec or a label is read by when the node's own slot
# types are not at hand.
INTRINSIC_SLOT_TYPES: Mapping[SlotName, SlotType] = {
    SlotName("cpu"): SlotType.COUNT, SlotName("mem"): SlotType.BYTES}

def parse_binary_size(text: str | int | Decimal) -> Decimal:
    """`"1g"` → 1073741824, `"512m"`, `"1.5GiB"`, `"4294967296"`; result is a whole byte count."""
    try:
        return Decimal(units.parse_binary_size(text))
    except ValueError as exc:
        raise InvalidArgument(str(exc), field="size") from None


def parse_amount(slot: str, raw: object, slot_type: SlotType) -> Decimal:
    """One requested amount; bytes slots accept binary sizes, others decimal numbers."""
    if slot_type is SlotType.BYTES and isinstance(raw, str):
        return parse_binary_size(raw)
    try:
        value = Decimal(str(raw))
    except InvalidOperation:
        raise InvalidArgument(f"not a number: {raw!r}", field=f"resource_slots.{slot}") from None
    if not value.is_finite() or value < 0:
        raise InvalidArgument(f"invalid amount {raw!r}", field=f"resource_slots.{slot}")
    return value


def parse_slots(raw: Mapping[str, object], slot_types: Mapping[SlotName, SlotType], *,
                keep_unknown: bool = False) -> ResourceSlots:
    """`{"cpu": "2", "mem": "4g", "mock.device": 1}` → Decimals; unknown slots raise.

    Zero amounts are kept (a kernel may ask for 0 of a slot); an unknown slot with amount 0 is
    dropped rather than refused, as the Manager sends zeros for every slot it knows. With
    `keep_unknown`, a slot `slot_types` lacks is kept as a plain number (a record read back).
    """
    result: ResourceSlots = {}
    for name, value in raw.items():
        slot = SlotName(str(name))
        if slot not in slot_types:
            if keep_unknown:
                result[slot] = parse_amount(slot, value, SlotType.COUNT)
                continue
            if _is_zero(value):
                continue
            raise UnsupportedSlot(name)
        result[slot] = parse_amount(name, value, slot_types[slot])
    return result


def _is_zero(raw: object) -> bool:
    try:
        return Decimal(str(raw)) == 0
    except InvalidOperation:
        return False


def slots_to_json(slots: Mapping[SlotName, Decimal]) -> dict[str, str]:
    return {str(k): str(v) for k, v in slots.items()}


def slots_from_json(raw: Mapping[str, str]) -> ResourceSlots:
    return {SlotName(k): Decimal(v) for k, v in raw.items()}


def add_slots(*many: Mapping[SlotName, Decimal]) -> ResourceSlots:
    total: ResourceSlots = {}
    for slots in many:
        for name, amount in slots.items():
            total[name] = total.get(name, Decimal(0)) + amount
    return total


def subtract_slots(left: Mapping[SlotName, Decimal],
                   right: Mapping[SlotName, Decimal]) -> ResourceSlots:
    """`left − right` per slot, over left's keys; may go negative (the caller decides)."""
    return {name: amount - right.get(name, Decimal(0)) for name, amount in left.items()}


def capacity(device_totals: Mapping[SlotName, Decimal],
             reserved: Mapping[SlotName, Decimal]) -> ResourceSlots:
    """What the node may promise: device totals minus reserved amounts, never below zero."""
    return {name: max(Decimal(0), total - reserved.get(name, Decimal(0)))
            for name, total in device_totals.items()}


def plugin_key_of(slot: SlotName) -> str:
    """`cuda.device` → `cuda`; intrinsic `cpu` → `cpu`."""
    return slot.split(".", 1)[0]


def is_accelerator_slot(slot: SlotName) -> bool:
    """Backend.AI's rule: major part in device/devices/share/shares."""
    major = slot.split(".", 1)[1].split(":", 1)[0] if "." in slot else ""
    return major in ("device", "devices", "share", "shares")


def nonzero(slots: Mapping[SlotName, Decimal]) -> ResourceSlots:
    return {k: v for k, v in slots.items() if v != 0}

