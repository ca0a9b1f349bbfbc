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
    """Keeps min/max/sum/count (in its last summary) and the last (time, value) point.

    `diff` and `rate` (per second) are clamped at zero: a counter that goes backwards was
    reset (container restart, cgroup recreated), and a reset must never read as negative.
    `feed` is the stats cycle's path: one update and its summary in a single call (every live
    kernel feeds ~15 of these per cycle, so the state is three slots).
    """

    __slots__ = ("_at", "_last", "_summary")

    def __init__(self) -> None:
        self._at: float | None = None
        self._last = _ZERO
        self._summary = _EMPTY

    def feed(self, value: Decimal, at: float) -> StatsSummary:
        """Update with (at, value) and return the summary; an older or same-time point is
        ignored (rates need strictly increasing time)."""
        previous = self._at
        diff = rate = _ZERO
        if previous is None:
            low = high = total = value
            count = 1
        elif at <= previous:
            return self._summary
        else:
            low, high, total, count = self._summary[:4]
            if value < low:
                low = value
            elif value > high:
                high = value
            total += value
            count += 1
            last = self._last
            if value > last:
                diff = value - last
                rate = diff / _seconds(at - previous)
        self._at, self._last = at, value
        self._summary = summary = _new_summary(StatsSummary, (low, high, total, count, diff, rate))
        return summary

    def update(self, value: Decimal, at: float) -> None:
        self.feed(value, at)

    @property
    def last(self) -> Decimal:
        return self._last

    @property
    def diff(self) -> Decimal:
        return self._summary.diff

    @property
    def rate(self) -> Decimal:
        return self._summary.rate

    def summary(self) -> StatsSummary:
        return self._summary
