"""Giving freed heap back to the system after many kernels go (glibc's `malloc_trim`).

A node that held hundreds of kernels and lost most of them keeps their freed memory in
malloc's arenas (each worker thread has its own), so the agent's RSS stays at its peak.
`HeapTrimmer` asks for a trim once the live kernel count has fallen by `drop` from its peak
since the last trim; `malloc_trim` is the edge (a no-op where libc has none).
"""

from __future__ import annotations

import ctypes
import ctypes.util
import logging
from collections.abc import Callable
from functools import cache

log = logging.getLogger(__name__)


@cache
def _libc_trim() -> Callable[[int], int] | None:
    name = ctypes.util.find_library("c")
    try:
        trim = ctypes.CDLL(name).malloc_trim if name else None
    except (OSError, AttributeError):  # not glibc (musl has no malloc_trim)
        return None
    if trim is not None:
        trim.argtypes, trim.restype = [ctypes.c_size_t], ctypes.c_int
    return trim


def malloc_trim() -> bool:
    """Return free heap pages of every arena to the system; False when nothing was given back
    or libc has no `malloc_trim`. Blocking (milliseconds): call it in a thread."""
    trim = _libc_trim()
    return bool(trim(0)) if trim is not None else False


class HeapTrimmer:
    """Decides when the kernel count has dropped enough since its peak to trim (pure)."""

    def __init__(self, drop: int = 32) -> None:
        self._drop = drop
        self._peak = 0

    def due(self, live: int) -> bool:
        """Note the live kernel count; True when a trim is due (the peak restarts here)."""
        if live >= self._peak:
            self._peak = live
            return False
        if self._peak - live < self._drop:
            return False
        self._peak = live
        return True
