"""A bounded FIFO of outgoing messages: the agent's memory of what Redis has not yet taken.

Pure data structure (no I/O, no event loop).  When full, the oldest message is dropped and
counted.  A message may carry a *coalesce key*: pushing a new message with the same key
replaces the waiting one (a heartbeat that could not be sent is superseded by the next).
"""

from __future__ import annotations

from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Envelope:
    """One event as it goes on the wire."""

    name: str
    source: str
    payload: str
    anycast: bool
    broadcast: bool
    cache_key: str | None = None
    coalesce_key: str | None = None


class Backlog:
    def __init__(self, capacity: int) -> None:
        if capacity < 1:
            raise ValueError(f"backlog capacity must be >= 1, got {capacity}")
        self.capacity = capacity
        self.dropped = 0
        self._items: deque[Envelope] = deque()

    def __len__(self) -> int:
        return len(self._items)

    def push(self, item: Envelope) -> Envelope | None:
        """Append ``item``; return the message dropped to make room, if any."""
        if item.coalesce_key is not None:
            self._remove_key(item.coalesce_key)
        dropped: Envelope | None = None
        if len(self._items) >= self.capacity:
            dropped = self._items.popleft()
            self.dropped += 1
        self._items.append(item)
        return dropped

    def head(self, n: int) -> list[Envelope]:
        """The first ``n`` waiting messages, oldest first (not removed)."""
        return [self._items[i] for i in range(min(n, len(self._items)))]

    def discard_head(self, sent: Sequence[Envelope]) -> int:
        """Remove the leading messages that are the very objects in ``sent``.

        Messages dropped or coalesced away while a batch was in flight are simply no longer
        at the front, so they are not removed twice.  Returns how many were removed.
        """
        ids = {id(m) for m in sent}
        removed = 0
        while self._items and id(self._items[0]) in ids:
            self._items.popleft()
            removed += 1
        return removed

    def _remove_key(self, key: str) -> None:
        kept = [m for m in self._items if m.coalesce_key != key]
        if len(kept) != len(self._items):
            self._items = deque(kept)
