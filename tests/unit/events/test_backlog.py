from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from berth.events import Backlog, Envelope


def env(i: int, key: str | None = None) -> Envelope:
    return Envelope(name=f"e{i}", source="a", payload="{}", anycast=True, broadcast=False,
                    coalesce_key=key)


def test_fifo_order_and_head() -> None:
    b = Backlog(10)
    for i in range(5):
        assert b.push(env(i)) is None
    assert [m.name for m in b.head(3)] == ["e0", "e1", "e2"]
    assert len(b) == 5


def test_full_backlog_drops_oldest_and_counts() -> None:
    b = Backlog(3)
    dropped = [b.push(env(i)) for i in range(5)]
    assert [d.name if d else None for d in dropped] == [None, None, None, "e0", "e1"]
    assert b.dropped == 2
    assert [m.name for m in b.head(10)] == ["e2", "e3", "e4"]


def test_coalesce_replaces_waiting_message_with_same_key() -> None:
    b = Backlog(10)
    b.push(env(0, "hb"))
    b.push(env(1))
    b.push(env(2, "hb"))
    assert [m.name for m in b.head(10)] == ["e1", "e2"]
    assert b.dropped == 0


def test_discard_head_only_removes_sent_objects_still_in_front() -> None:
    b = Backlog(3)
    for i in range(3):
        b.push(env(i))
    batch = b.head(2)
    b.push(env(3))  # drops e0 while the batch is "in flight"
    assert b.discard_head(batch) == 1  # only e1 was still at the front
    assert [m.name for m in b.head(10)] == ["e2", "e3"]


def test_capacity_must_be_positive() -> None:
    with pytest.raises(ValueError):
        Backlog(0)


@given(st.integers(1, 20), st.integers(0, 60))
def test_never_exceeds_capacity_and_keeps_newest(cap: int, n: int) -> None:
    b = Backlog(cap)
    for i in range(n):
        b.push(env(i))
    assert len(b) == min(cap, n)
    assert b.dropped == max(0, n - cap)
    assert [m.name for m in b.head(cap)] == [f"e{i}" for i in range(max(0, n - cap), n)]
