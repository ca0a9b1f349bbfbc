"""Heap trimming after bulk teardowns: when it is due, and the libc edge."""

from __future__ import annotations

from berth.telemetry.heap import HeapTrimmer, _libc_trim, malloc_trim


def test_a_trim_is_due_once_the_count_falls_by_drop_from_its_peak() -> None:
    trimmer = HeapTrimmer(drop=10)
    assert [trimmer.due(n) for n in (0, 50, 100, 95, 91)] == [False] * 5
    assert trimmer.due(90)                      # 10 below the peak of 100
    assert not trimmer.due(85)                  # the peak restarted at 90
    assert [trimmer.due(n) for n in (120, 111)] == [False, False]
    assert trimmer.due(0)


def test_malloc_trim_is_found_and_runs_on_this_glibc_host() -> None:
    assert _libc_trim() is not None
    blocks = [bytes(100_000 + n) for n in range(300)]  # freed heap for the trim to give back
    del blocks
    assert isinstance(malloc_trim(), bool)

