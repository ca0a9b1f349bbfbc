"""Moving statistics of one metric: min/max/sum/count and the last two points (pure)."""

from __future__ import annotations

from decimal import Decimal

from berth.stats.models import StatsSummary

_ZERO = Decimal(0)
_EMPTY = StatsSummary(_ZERO, _ZERO, _ZERO, 0, _ZERO, _ZERO)
_new_summary = tuple.__new__  # StatsSummary without its keyword-handling constructor
_last_seconds = (0.0, _ZERO)


def _seconds(elapsed: float) -> Decimal:
    """`elapsed` as a Decimal (exactly as printed); every metric of one sample shares it, so
    the last conversion is kept (one tuple, replaced whole: safe across threads)."""
    global _last_seconds
    cached = _last_seconds
    if cached[0] != elapsed:
        cached = _last_seconds = (elapsed, Decimal(repr(elapsed)))
    return cached[1]


class MovingStatistics:
    """Keeps min/max/sum/count and the last two (time, value) points.

    `diff` and `rate` (per second) are clamped at zero: a counter that goes backwards was
    reset (container restart, cgroup recreated), and a reset must never read as negative.
    `feed` is the stats cycle's path: one update and its summary in a single call (every live
    kernel feeds ~15 of these per cycle).
    """

    __slots__ = ("_count", "_last", "_max", "_min", "_prev", "_sum", "_summary")

    def __init__(self) -> None:
        self._min = _ZERO
        self._max = _ZERO
        self._sum = _ZERO
        self._count = 0
        self._last: tuple[float, Decimal] | None = None
        self._prev: tuple[float, Decimal] | None = None
        self._summary = _EMPTY

    def feed(self, value: Decimal, at: float) -> StatsSummary:
        """Update with (at, value) and return the summary; an older or same-time point is
        ignored (rates need strictly increasing time)."""
        last = self._last
        diff = rate = _ZERO
        if last is None:
            low = high = value
        elif at <= last[0]:
            return self._summary
        else:
            low, high = self._min, self._max
            if value < low:
                low = value
            elif value > high:
                high = value
            if value > last[1]:
                diff = value - last[1]
                rate = diff / _seconds(at - last[0])
        self._min, self._max = low, high
        self._sum = total = self._sum + value
        self._count = count = self._count + 1
        self._prev, self._last = last, (at, value)
        self._summary = summary = _new_summary(StatsSummary, (low, high, total, count, diff, rate))
        return summary

    def update(self, value: Decimal, at: float) -> None:
        self.feed(value, at)

    @property
    def last(self) -> Decimal:
        return self._last[1] if self._last is not None else _ZERO

    @property
    def diff(self) -> Decimal:
        return self._summary.diff

    @property
    def rate(self) -> Decimal:
        return self._summary.rate

    def summary(self) -> StatsSummary:
        return self._summary
