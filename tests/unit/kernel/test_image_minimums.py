"""The image-minimum rule (Backend.AI's ResourceLimitRule) as a pure function."""

from __future__ import annotations

from decimal import Decimal

import pytest

from berth.errors import BelowImageMinimum
from berth.kernel.image_minimums import check_image_minimums, image_minimums
from berth.types import SlotName, SlotType

P = "ai.backend.resource.min."


def test_minimums_read_sizes_for_mem_and_ignore_zero_and_garbage() -> None:
    labels = {P + "cpu": "2", P + "mem": "1g", P + "cuda.shares": "0", P + "tpu.device": "x",
              "ai.backend.features": "batch"}
    assert image_minimums(labels) == {"cpu": Decimal(2), "mem": Decimal(1 << 30)}


def test_below_minimum_names_slot_requested_and_minimum() -> None:
    with pytest.raises(BelowImageMinimum) as info:
        check_image_minimums({P + "mem": "1g"}, {"cpu": Decimal(1), "mem": Decimal(1 << 29)},
                             {}, image="img")
    assert (info.value.slot, info.value.requested, info.value.minimum) == (
        "mem", Decimal(1 << 29), Decimal(1 << 30))


def test_shmem_raises_the_mem_minimum() -> None:
    slots = {"cpu": Decimal(1), "mem": Decimal(1 << 30)}
    check_image_minimums({P + "mem": "1g"}, slots, {}, image="img")
    with pytest.raises(BelowImageMinimum):
        check_image_minimums({P + "mem": "1g"}, slots, {"shmem": "64m"}, image="img")


NODE = {SlotName("cpu"): SlotType.COUNT, SlotName("mem"): SlotType.BYTES}
GPU_NODE = {**NODE, SlotName("cuda.device"): SlotType.COUNT, SlotName("cuda.mem"): SlotType.BYTES}


def test_a_slot_the_node_lacks_is_skipped_unless_requested() -> None:
    labels = {P + "cuda.device": "1"}
    slots = {SlotName("cpu"): Decimal(1), SlotName("mem"): Decimal(1 << 30)}
    check_image_minimums(labels, slots, {}, image="img", slot_types=NODE)
    with pytest.raises(BelowImageMinimum):
        check_image_minimums(labels, slots, {}, image="img", slot_types=GPU_NODE)
    with pytest.raises(BelowImageMinimum):
        check_image_minimums(labels, {**slots, SlotName("cuda.device"): Decimal("0.5")}, {},
                             image="img", slot_types=NODE)


def test_a_bytes_slot_minimum_is_read_by_the_nodes_slot_type() -> None:
    labels = {P + "cuda.mem": "4g"}
    assert image_minimums(labels, GPU_NODE) == {"cuda.mem": Decimal(4 << 30)}
    assert image_minimums(labels) == {}  # not a number without the node's types: ignored
    slots = {SlotName("cpu"): Decimal(1), SlotName("mem"): Decimal(1 << 30),
             SlotName("cuda.mem"): Decimal(2 << 30)}
    with pytest.raises(BelowImageMinimum):
        check_image_minimums(labels, slots, {}, image="img", slot_types=GPU_NODE)
