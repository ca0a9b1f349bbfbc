"""The CLI's number formats: sizes, rates, durations, cores, percentages, times, slots."""

from __future__ import annotations

import time

import pytest

from berth.cli.units import (
    human_bytes,
    human_cores,
    human_duration,
    human_number,
    human_percent,
    human_rate,
    human_time,
    slot_amount,
    to_number,
)


@pytest.mark.parametrize(("value", "shown"), [
    (0, "0 B"), (1023, "1023 B"), (1024, "1 KiB"), (1536, "1.5 KiB"),
    (512 * 2**20, "512 MiB"), (22017 * 2**10, "21.5 MiB"), (25007554560, "23.3 GiB"),
    (270553174016, "252 GiB"), (3 * 2**40, "3 TiB"), (2**70, "1024 EiB"),
])
def test_human_bytes(value: int, shown: str) -> None:
    assert human_bytes(value) == shown


def test_human_rate() -> None:
    assert human_rate(2511.3) == "2.5 KiB/s" and human_rate(0) == "0 B/s"


@pytest.mark.parametrize(("seconds", "shown"), [
    (0, "0s"), (0.24, "0.2s"), (1.551, "1.6s"), (9.96, "10s"), (55.441, "55s"),
    (133, "2m13s"), (3600, "1h00m"), (3900, "1h05m"), (3 * 86400 + 4 * 3600 + 59, "3d04h"),
    (-5, "-5s"),
])
def test_human_duration(seconds: float, shown: str) -> None:
    assert human_duration(seconds) == shown


@pytest.mark.parametrize(("cores", "shown"), [
    (1, "1 core"), (2, "2 cores"), (0.5, "0.5 cores"), (1.987, "1.99 cores"), (0, "0 cores"),
])
def test_human_cores(cores: float, shown: str) -> None:
    assert human_cores(cores) == shown


@pytest.mark.parametrize(("value", "shown"), [
    (37.5, "37.5%"), (0.016818, "0.02%"), (100, "100%"), (99.666, "99.7%"), (0, "0%"),
])
def test_human_percent(value: float, shown: str) -> None:
    assert human_percent(value) == shown


def test_human_number_and_to_number() -> None:
    assert human_number(7) == "7" and human_number(0.5) == "0.5" and human_number(1.256) == "1.26"
    assert to_number("1.50") == 1.5 and to_number(3) == 3.0
    for bad in (None, True, "NaN", "inf", "lots", ""):
        assert to_number(bad) is None


def test_human_time_is_a_local_date_with_how_long_ago() -> None:
    now = time.time()
    text = human_time(now - 133, now)
    assert text.endswith("(2m13s ago)")
    assert time.strftime("%Y-%m-%d", time.localtime(now - 133)) in text
    assert "ago" not in human_time(now)


@pytest.mark.parametrize(("slot", "value", "shown"), [
    ("mem", "536870912", "512 MiB"), ("cuda.mem", 2**30, "1 GiB"), ("cpu", "1", "1 core"),
    ("cpu", "0.5", "0.5 cores"), ("cuda.device", "2", "2"), ("cuda.shares", "0.25", "0.25"),
    ("mem", None, "-"), ("mem", "lots", "lots"),
])
def test_slot_amount(slot: str, value: object, shown: str) -> None:
    assert slot_amount(slot, value) == shown
