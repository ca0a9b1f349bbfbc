from __future__ import annotations

from decimal import Decimal

from hypothesis import given
from hypothesis import strategies as st

from berth.stats import MovingStatistics


def test_rate_and_diff() -> None:
    m = MovingStatistics()
    m.update(Decimal(100), 1.0)
    assert m.rate == 0 and m.diff == 0
    m.update(Decimal(300), 3.0)
    assert m.diff == 200 and m.rate == 100
    s = m.summary()
    assert (s.min, s.max, s.sum, s.count, s.avg) == (100, 300, 400, 2, 200)


def test_counter_reset_is_not_negative() -> None:
    m = MovingStatistics()
    m.update(Decimal(10_000), 1.0)
    m.update(Decimal(5), 2.0)
    assert m.diff == 0 and m.rate == 0


def test_same_time_sample_is_ignored() -> None:
    m = MovingStatistics()
    m.update(Decimal(1), 1.0)
    m.update(Decimal(99), 1.0)
    assert m.last == 1 and m.summary().count == 1


@given(st.lists(st.integers(min_value=0, max_value=10**15), min_size=1, max_size=30))
def test_rate_never_negative(values: list[int]) -> None:
    m = MovingStatistics()
    for i, v in enumerate(values):
        m.update(Decimal(v), float(i))
        assert m.rate >= 0 and m.diff >= 0
