from decimal import Decimal as D

import pytest

from berth.errors import (
    FractionalResourceFragmented,
    InsufficientResource,
    InvalidArgument,
    NotMultipleOfQuantum,
    UnsupportedSlot,
)
from berth.resources.affinity import AffinityPolicy, device_groups
from berth.resources.alloc import (
    AllocationConflict,
    AllocationStrategy,
    DeviceSlot,
    DiscreteAllocMap,
    FractionAllocMap,
)
from berth.types import DeviceId, SlotName, SlotType

GPU = SlotName("x.device")
SHR = SlotName("x.shares")


def discrete(n: int, strategy: AllocationStrategy = AllocationStrategy.EVENLY,
             amount: int = 1, slot_type: SlotType = SlotType.COUNT) -> DiscreteAllocMap:
    return DiscreteAllocMap({DeviceId(f"d{i}"): DeviceSlot(GPU, slot_type, D(amount))
                             for i in range(n)}, strategy=strategy)


def fraction(n: int, strategy: AllocationStrategy = AllocationStrategy.EVENLY
             ) -> FractionAllocMap:
    return FractionAllocMap({DeviceId(f"d{i}"): DeviceSlot(SHR, SlotType.COUNT, D(1))
                             for i in range(n)}, strategy=strategy)


def test_discrete_takes_whole_devices_and_frees_exactly() -> None:
    m = discrete(4)
    got = m.allocate({GPU: D(2)})
    assert sum(got[GPU].values()) == 2 and all(v == 1 for v in got[GPU].values())
    assert m.used_amount(GPU) == 2
    m.free(got)
    assert m.used_amount(GPU) == 0


def test_discrete_insufficient_names_slot_amounts_and_changes_nothing() -> None:
    m = discrete(2)
    m.allocate({GPU: D(1)})
    with pytest.raises(InsufficientResource) as err:
        m.allocate({GPU: D(2)})
    assert (err.value.slot, err.value.requested, err.value.available) == (GPU, D(2), D(1))
    assert m.used_amount(GPU) == 1


def test_discrete_rejects_fractions_and_unknown_slots() -> None:
    with pytest.raises(NotMultipleOfQuantum):
        discrete(2).allocate({GPU: D("0.5")})
    with pytest.raises(UnsupportedSlot):
        discrete(2).allocate({SlotName("y.device"): D(1)})


def test_unique_slot_exactly_one() -> None:
    m = discrete(2, slot_type=SlotType.UNIQUE)
    with pytest.raises(InvalidArgument):
        m.allocate({GPU: D(2)})
    assert sum(m.allocate({GPU: D(1)})[GPU].values()) == 1


def test_fill_packs_evenly_spreads() -> None:
    fill = discrete(2, AllocationStrategy.FILL, amount=4)
    assert fill.allocate({GPU: D(2)}) == {GPU: {"d0": D(2)}}
    assert fill.allocate({GPU: D(3)}) == {GPU: {"d0": D(2), "d1": D(1)}}
    even = discrete(2, AllocationStrategy.EVENLY, amount=4)
    assert even.allocate({GPU: D(2)}) == {GPU: {"d0": D(2)}}
    assert even.allocate({GPU: D(2)}) == {GPU: {"d1": D(2)}}  # least loaded next
    assert even.allocate({GPU: D(4)}) == {GPU: {"d0": D(2), "d1": D(2)}}


def test_fraction_quantum() -> None:
    with pytest.raises(NotMultipleOfQuantum):
        fraction(2).allocate({SHR: D("0.005")})


def test_fraction_evenly_uses_least_loaded_device() -> None:
    m = fraction(2)
    assert m.allocate({SHR: D("0.6")}) == {SHR: {"d0": D("0.6")}}
    assert m.allocate({SHR: D("0.3")}) == {SHR: {"d1": D("0.3")}}


def test_fraction_fill_packs() -> None:
    m = fraction(2, AllocationStrategy.FILL)
    m.allocate({SHR: D("0.6")})
    assert m.allocate({SHR: D("0.3")}) == {SHR: {"d0": D("0.3")}}


def test_fragmentation_allowed_splits_and_forbidden_refuses() -> None:
    m = fraction(2)
    m.allocate({SHR: D("0.6")})
    m.allocate({SHR: D("0.6")})
    with pytest.raises(FractionalResourceFragmented):
        m.allocate({SHR: D("0.5")}, allow_fragmentation=False)
    got = m.allocate({SHR: D("0.5")}, allow_fragmentation=True)
    assert got == {SHR: {"d0": D("0.25"), "d1": D("0.25")}}  # EVENLY water-fills the split
    assert m.used_amount(SHR) == D("1.7")


def test_unfragmented_multi_device_requests_split_near_equally() -> None:
    m = fraction(3)
    got = m.allocate({SHR: D("2.5")}, allow_fragmentation=False)
    assert sorted(got[SHR].values()) == [D("0.83"), D("0.83"), D("0.84")]
    with pytest.raises(InsufficientResource):
        m.allocate({SHR: D("0.51")}, allow_fragmentation=False)


def test_unfragmented_single_device_fits_whole() -> None:
    m = fraction(2)
    m.allocate({SHR: D("0.3")})
    assert m.allocate({SHR: D("0.7")}, allow_fragmentation=False) == {SHR: {"d1": D("0.7")}}


def test_apply_and_free_conflicts_change_nothing() -> None:
    m = discrete(2)
    m.apply({GPU: {DeviceId("d0"): D(1)}})
    with pytest.raises(AllocationConflict):
        m.apply({GPU: {DeviceId("d1"): D(1), DeviceId("d0"): D(1)}})
    with pytest.raises(AllocationConflict):
        m.apply({GPU: {DeviceId("zz"): D(1)}})
    with pytest.raises(AllocationConflict):
        m.free({GPU: {DeviceId("d1"): D(1)}})
    assert m.free_per_device(GPU) == {"d0": D(0), "d1": D(1)}


def test_affinity_groups_follow_numa() -> None:
    numa = {DeviceId("a"): 0, DeviceId("b"): 0, DeviceId("c"): 1, DeviceId("d"): 1}
    free = {DeviceId("a"): D(0), DeviceId("b"): D(1), DeviceId("c"): D(1), DeviceId("d"): D(1)}
    assert device_groups(numa, AffinityPolicy.INTERLEAVED, (), free) == [["a", "c", "b", "d"]]
    assert device_groups(numa, AffinityPolicy.PREFER_SINGLE_NODE, (), free) == \
        [["c", "d"], ["a", "b"]]
    assert device_groups(numa, AffinityPolicy.INTERLEAVED, {1}, free) == [["c", "d"], ["a", "b"]]


def test_groups_bound_strategy_order() -> None:
    m = discrete(4)
    got = m.allocate({GPU: D(2)}, groups=[["d2", "d3"], ["d0", "d1"]])
    assert set(got[GPU]) == {"d2", "d3"}
