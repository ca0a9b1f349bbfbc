from decimal import Decimal

import pytest

from berth.errors import InvalidArgument, UnsupportedSlot
from berth.resources.slots import (
    capacity,
    is_accelerator_slot,
    parse_binary_size,
    parse_slots,
    slots_from_json,
    slots_to_json,
)
from berth.types import SlotName, SlotType
from berth.units import format_binary_size

TYPES = {SlotName("cpu"): SlotType.COUNT, SlotName("mem"): SlotType.BYTES,
         SlotName("mock.device"): SlotType.COUNT}


@pytest.mark.parametrize(("text", "value"), [
    ("1g", 1 << 30), ("512m", 512 << 20), ("4294967296", 1 << 32), ("1.5GiB", 3 << 29),
    ("2k", 2048), ("1t", 1 << 40), (" 64M ", 64 << 20), (1024, 1024),
])
def test_binary_sizes(text: str, value: int) -> None:
    assert parse_binary_size(text) == value


@pytest.mark.parametrize("bad", ["", "g", "1x", "-1g", "1..2m"])
def test_bad_binary_sizes(bad: str) -> None:
    with pytest.raises(InvalidArgument):
        parse_binary_size(bad)


def test_format_round_trips() -> None:
    assert format_binary_size(Decimal(1 << 32)) == "4g"
    assert format_binary_size(Decimal(1000)) == "1000"
    assert parse_binary_size(format_binary_size(Decimal(768 << 20))) == 768 << 20


def test_parse_slots_types_and_units() -> None:
    got = parse_slots({"cpu": "2", "mem": "4g", "mock.device": 1}, TYPES)
    assert got == {"cpu": Decimal(2), "mem": Decimal(1 << 32), "mock.device": Decimal(1)}


def test_unknown_slot_refused_unless_zero() -> None:
    assert parse_slots({"cpu": "1", "cuda.shares": "0"}, TYPES) == {"cpu": Decimal(1)}
    with pytest.raises(UnsupportedSlot) as err:
        parse_slots({"cuda.device": "1"}, TYPES)
    assert err.value.slot == "cuda.device"


@pytest.mark.parametrize("bad", ["-1", "nan", "abc", "inf"])
def test_bad_amounts(bad: str) -> None:
    with pytest.raises(InvalidArgument):
        parse_slots({"cpu": bad}, TYPES)


def test_capacity_subtracts_reserved_never_negative() -> None:
    totals = {SlotName("cpu"): Decimal(2), SlotName("mem"): Decimal(1 << 30)}
    assert capacity(totals, {SlotName("cpu"): Decimal(1), SlotName("mem"): Decimal(2 << 30)}) \
        == {"cpu": Decimal(1), "mem": Decimal(0)}


def test_json_round_trip_and_accelerator_rule() -> None:
    slots = {SlotName("cpu"): Decimal("0.5"), SlotName("mem"): Decimal(1)}
    assert slots_from_json(slots_to_json(slots)) == slots
    assert is_accelerator_slot(SlotName("cuda.shares"))
    assert is_accelerator_slot(SlotName("mock.device"))
    assert not is_accelerator_slot(SlotName("cpu"))
