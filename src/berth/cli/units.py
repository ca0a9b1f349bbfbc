"""Numbers as an operator reads them: sizes in KiB/MiB/GiB, durations as ``2m13s``, CPU in
cores or %, times as a local date with how long ago. Pure functions of their arguments; every
screen of the CLI formats through here."""

from __future__ import annotations

import math
from datetime import datetime
from decimal import Decimal, InvalidOperation
from typing import Any

__all__ = [
    "MISSING",
    "human_bytes",
    "human_cores",
    "human_duration",
    "human_number",
    "human_percent",
    "human_rate",
    "human_time",
    "slot_amount",
    "to_number",
]

MISSING = "-"
_BINARY = ("B", "KiB", "MiB", "GiB", "TiB", "PiB", "EiB")


def to_number(value: Any) -> float | None:
    """A finite float from a number or a numeric string (the wire sends numbers as strings);
    None for anything else (None, booleans, text, NaN, infinities)."""
    if value is None or isinstance(value, bool):
        return None
    try:
        number = float(Decimal(str(value).strip()))
    except (InvalidOperation, ValueError):
        return None
    return number if math.isfinite(number) else None


def human_bytes(value: float) -> str:
    """``1023 B``, ``1.5 KiB``, ``512 MiB``, ``23.3 GiB`` (binary units, as cgroups count)."""
    size, unit = float(value), 0
    while abs(size) >= 1024 and unit < len(_BINARY) - 1:
        size, unit = size / 1024, unit + 1
    if unit == 0:
        return f"{round(size)} B"
    text = f"{size:.1f}" if abs(size) < 100 else str(round(size))
    return f"{text.removesuffix('.0')} {_BINARY[unit]}"


def human_rate(bytes_per_second: float) -> str:
    """``2.5 KiB/s``."""
    return f"{human_bytes(bytes_per_second)}/s"


def human_duration(seconds: float) -> str:
    """``0.2s``, ``55s``, ``2m13s``, ``1h05m``, ``3d04h`` (the two largest units only)."""
    if seconds < 0:
        return f"-{human_duration(-seconds)}"
    if seconds < 10:
        return f"{seconds:.1f}s".replace(".0s", "s")
    whole = int(seconds)
    minutes, secs = divmod(whole, 60)
    hours, minutes = divmod(minutes, 60)
    days, hours = divmod(hours, 24)
    if days:
        return f"{days}d{hours:02d}h"
    if hours:
        return f"{hours}h{minutes:02d}m"
    if minutes:
        return f"{minutes}m{secs:02d}s"
    return f"{secs}s"


def human_cores(cores: float) -> str:
    """``1 core``, ``2 cores``, ``0.5 cores``, ``1.99 cores``."""
    text = f"{cores:.2f}".rstrip("0").rstrip(".")
    return f"{text} core" if text == "1" else f"{text} cores"


def human_percent(value: float) -> str:
    """``37.5%``, ``0.02%``, ``100%``: one decimal, two below 1%."""
    text = f"{value:.2f}" if abs(value) < 1 else f"{value:.1f}"
    return f"{text.rstrip('0').rstrip('.')}%"


def human_number(value: float) -> str:
    """A count or amount without noise: ``7``, ``0.5``, ``1.25``."""
    return f"{value:.2f}".rstrip("0").rstrip(".") if value != int(value) else str(int(value))


def human_time(epoch: float, now: float | None = None) -> str:
    """``2026-12-01 10:09:55 UTC (2m13s ago)`` in the local time zone."""
    when = datetime.fromtimestamp(epoch).astimezone()
    text = when.strftime("%Y-%m-%d %H:%M:%S %Z").strip()
    if now is None:
        return text
    return f"{text} ({human_duration(now - epoch)} ago)"


def slot_amount(slot: str, value: Any) -> str:
    """A resource slot's amount in its unit: ``mem`` (and ``*.mem``) in bytes, ``cpu`` in
    cores, anything else (``cuda.device``, ``cuda.shares``…) as a number."""
    number = to_number(value)
    if number is None:
        return MISSING if value is None else str(value)
    if slot == "mem" or slot.endswith(".mem"):
        return human_bytes(number)
    if slot == "cpu":
        return human_cores(number)
    return human_number(number)
