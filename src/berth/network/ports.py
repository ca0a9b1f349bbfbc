"""Host port pool: FIFO over an inclusive range, with a reuse cooldown. Pure.

A released port goes to the back of the queue and may not be handed out by `acquire` until
`cooldown` seconds (by the injected clock) have passed, so a client still talking to a dead
kernel's port does not reach the next kernel. `assign_port` (the `assign_port` RPC) takes the
oldest free port ignoring the cooldown. `discard` marks a port taken without acquiring it
(adoption of live containers at restart). Releasing a port outside the range is ignored.
Synchronous and await-free: every call is atomic under asyncio.
"""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Callable

from berth.errors import InvalidArgument, PortPoolExhausted


class PortPool:
    def __init__(self, first: int, last: int, *, cooldown: float = 60.0,
                 clock: Callable[[], float] = time.monotonic) -> None:
        if not 0 < first <= last <= 65535:
            raise InvalidArgument(f"bad port range {first}-{last}", field="port_range")
        self.first, self.last = first, last
        self._cooldown = cooldown
        self._clock = clock
        self._free: OrderedDict[int, float] = OrderedDict((p, float("-inf"))
                                                          for p in range(first, last + 1))

    def __contains__(self, port: int) -> bool:
        return self.first <= port <= self.last

    @property
    def free_count(self) -> int:
        return len(self._free)

    def ready_count(self) -> int:
        now = self._clock()
        return sum(1 for released in self._free.values() if now - released >= self._cooldown)

    def acquire(self) -> int:
        """Oldest free port whose cooldown has passed; PortPoolExhausted otherwise."""
        if not self._free:
            raise PortPoolExhausted("no free host port", first=self.first, last=self.last)
        port, released = next(iter(self._free.items()))
        if self._clock() - released < self._cooldown:
            raise PortPoolExhausted(f"all free ports cooling down (oldest {port})",
                                    first=self.first, last=self.last)
        del self._free[port]
        return port

    def acquire_many(self, count: int) -> list[int]:
        """`count` ports or none (PortPoolExhausted, pool unchanged)."""
        taken: list[int] = []
        try:
            for _ in range(count):
                taken.append(self.acquire())
        except PortPoolExhausted:
            for port in reversed(taken):
                self._free[port] = float("-inf")
                self._free.move_to_end(port, last=False)
            raise
        return taken

    def assign_port(self) -> int:
        """Oldest free port, cooldown or not."""
        if not self._free:
            raise PortPoolExhausted("no free host port", first=self.first, last=self.last)
        port, _ = self._free.popitem(last=False)
        return port

    def release(self, port: int) -> None:
        """Return `port`; starts its cooldown. Out-of-range and already-free ports are ignored."""
        if port in self and port not in self._free:
            self._free[port] = self._clock()

    def discard(self, port: int) -> None:
        """Mark `port` taken (held by an adopted container); no-op if out of range or taken."""
        self._free.pop(port, None)
