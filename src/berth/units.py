"""Binary sizes, the one parser for them: config values (`scratch-size = "1g"`) and the byte
slots of a kernel's resources (`mem = "512MiB"`) read the same text the same way."""

from __future__ import annotations

import re
from decimal import Decimal

__all__ = ["format_binary_size", "parse_binary_size"]

_POWERS = {"": 0, "k": 1, "m": 2, "g": 3, "t": 4, "p": 5, "e": 6}
_SIZE_RE = re.compile(r"^\s*([0-9]+(?:\.[0-9]+)?)\s*([kmgtpe]?)(?:i?b)?\s*$", re.IGNORECASE)


def parse_binary_size(value: str | int | Decimal) -> int:
    """`"1g"` → 1073741824; `"512m"`, `"1.5GiB"`, `"4294967296"`, `7` (bytes). A fraction of a
    byte is dropped. Raises ValueError for anything else: negative, not finite, a bool, "1e3"."""
    if isinstance(value, bool):
        raise ValueError(f"not a size: {value!r}")  # noqa: TRY004 - pydantic reports only ValueError with its key
    if isinstance(value, (int, Decimal)):
        number = Decimal(value)
        if not number.is_finite() or number < 0:
            raise ValueError(f"not a size: {value!r}")
        return int(number)
    match = _SIZE_RE.match(str(value))
    if match is None:
        raise ValueError(f"not a binary size: {value!r}")
    digits, suffix = match.groups()
    return int(Decimal(digits) * (1024 ** _POWERS[suffix.lower()]))


def format_binary_size(value: int | Decimal) -> str:
    """Inverse of `parse_binary_size` for exact multiples: 4294967296 → `"4g"`, 1000 → `"1000"`."""
    number = int(value)
    for suffix, power in sorted(_POWERS.items(), key=lambda kv: -kv[1]):
        unit = 1024**power
        if power and number and number % unit == 0:
            return f"{number // unit}{suffix}"
    return str(number)
