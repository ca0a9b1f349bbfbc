import pytest

from berth.errors import InvalidArgument, PortPoolExhausted
from berth.network.ports import PortPool


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_fifo_and_cooldown() -> None:
    clock = Clock()
    pool = PortPool(30000, 30002, cooldown=60, clock=clock)
    assert [pool.acquire() for _ in range(3)] == [30000, 30001, 30002]
    with pytest.raises(PortPoolExhausted):
        pool.acquire()
    pool.release(30001)
    with pytest.raises(PortPoolExhausted):
        pool.acquire()  # cooling down
    assert pool.ready_count() == 0 and pool.free_count == 1
    clock.now += 60
    assert pool.acquire() == 30001


def test_assign_port_bypasses_cooldown() -> None:
    pool = PortPool(1, 1, cooldown=60, clock=Clock())
    pool.release(pool.acquire())
    assert pool.assign_port() == 1
    with pytest.raises(PortPoolExhausted):
        pool.assign_port()


def test_acquire_many_all_or_nothing() -> None:
    pool = PortPool(100, 103, clock=Clock())
    assert pool.acquire_many(2) == [100, 101]
    with pytest.raises(PortPoolExhausted):
        pool.acquire_many(3)
    assert pool.acquire_many(2) == [102, 103]


def test_discard_release_out_of_range_and_double_release() -> None:
    clock = Clock()
    pool = PortPool(10, 12, cooldown=0, clock=clock)
    pool.discard(11)
    pool.discard(99)
    assert pool.acquire_many(2) == [10, 12]
    pool.release(99)  # ignored
    pool.release(11)
    pool.release(11)  # already free: ignored, not duplicated
    assert pool.free_count == 1 and pool.acquire() == 11


def test_bad_range() -> None:
    with pytest.raises(InvalidArgument):
        PortPool(10, 9)
