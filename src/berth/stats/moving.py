"""Moving statistics of one metric: min/max/sum/count and the last two points (pure)."""

from __future__ import annotations

from decimal import Decimal

from berth.stats.models import StatsSummary

_ZERO = Decimal(0)


class MovingStatistics:
    """Keeps min/max/sum/count and the last two (time, value) points.

    `diff` and `rate` (per second) are clamped at zero: a counter that goes backwards was
    reset (container restart, cgroup recreated), and a reset must never read as negative.
    """

    __slots__ = ("_count", "_last", "_max", "_min", "_prev", "_sum")

    def __init__(self) -> None:
        self._min = _ZERO
        self._max = _ZERO
        self._sum = _ZERO
        self._count = 0
        self._last: tuple[float, Decimal] | None = None
        self._prev: tuple[float, Decimal] | None = None

    def update(self, value: Decimal, at: float) -> None:
        if self._last is not None and at <= self._last[0]:
            return  # same or older sample: ignore, rates need strictly increasing time
        self._min = value if self._count == 0 else min(self._min, value)
        self._max = value if self._count == 0 else max(self._max, value)
        self._sum += value
        self._count += 1
        self._prev, self._last = self._last, (at, value)

    @property
    def last(self) -> Decimal:
        return self._last[1] if self._last is not None else _ZERO

    @property
    def diff(self) -> Decimal:
        if self._last is None or self._prev is None:
            return _ZERO
        return max(self._last[1] - self._prev[1], _ZERO)

    @property
    def rate(self) -> Decimal:
        if self._last is None or self._prev is None:
            return _ZERO
        elapsed = Decimal(repr(self._last[0] - self._prev[0]))
        return self.diff / elapsed if elapsed > 0 else _ZERO

    def summary(self) -> StatsSummary:
        return StatsSummary(min=self._min, max=self._max, sum=self._sum, count=self._count,
                            diff=self.diff, rate=self.rate)
