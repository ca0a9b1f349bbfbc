"""Disk usage of a kernel's scratch directory (blocking I/O: run it in a thread)."""

from __future__ import annotations

import os
import random
import time
from collections.abc import Callable
from pathlib import Path


class ScratchMeter:
    """`scratch_usage` with walks spaced out: a scratch with a file system of its own is asked
    every time (statvfs, at once); a plain directory is walked again only when its last walk
    is `max_age` seconds old (times a random 1–1.5, so kernels created together do not all
    walk in one cycle). A walk costs ~1 ms per small scratch: every 5 s for 500 kernels, that is
    most of a stats cycle for a figure that moves slowly."""

    def __init__(self, max_age: float = 30.0, *, clock: Callable[[], float] = time.monotonic,
                 jitter: Callable[[], float] = random.random) -> None:
        self._max_age = max_age
        self._clock = clock
        self._jitter = jitter
        self._walked: dict[Path, tuple[float, int]] = {}  # path → (walk again after, bytes)
        self._swept = clock()

    def __call__(self, path: Path) -> int:
        now = self._clock()
        self._sweep(now)
        cached = self._walked.get(path)
        if cached is not None and now < cached[0]:
            return cached[1]
        used, walked = _usage(path)
        if walked:
            self._walked[path] = (now + self._max_age * (1 + self._jitter() / 2), used)
        return used

    def _sweep(self, now: float) -> None:
        """Forget scratches nobody asked about for a while (their kernels are gone)."""
        if now - self._swept < self._max_age:
            return
        self._swept = now
        stale = now - self._max_age
        self._walked = {p: v for p, v in self._walked.items() if v[0] > stale}


def scratch_usage(path: Path) -> int:
    """Bytes used by a kernel's scratch: a file system of its own (hostfile's loop-mounted
    image, memory's tmpfs) is asked with statvfs, at once; a plain directory is walked."""
    return _usage(path)[0]


def _usage(path: Path) -> tuple[int, bool]:
    """(bytes used, whether the directory was walked)."""
    try:
        own_fs = os.lstat(path).st_dev != os.lstat(path.parent).st_dev
    except FileNotFoundError:
        return 0, False
    if own_fs:
        st = os.statvfs(path)
        return (st.f_blocks - st.f_bfree) * st.f_frsize, False
    return allocated_under(path), True




def allocated_under(path: Path) -> int:
    """Bytes allocated under `path` (st_blocks × 512, hard links counted once, no symlinks).

    Walked by descriptor (os.fwalk): the kernel can write parts of its scratch, and a directory
    it swaps for a link between the listing and the descent is never entered."""
    seen: set[tuple[int, int]] = set()
    total = 0
    try:
        walk = os.fwalk(path)
        for _dirpath, dirnames, filenames, dir_fd in walk:
            for name in dirnames + filenames:
                try:
                    st = os.lstat(name, dir_fd=dir_fd)
                except FileNotFoundError:
                    continue
                if (st.st_dev, st.st_ino) in seen:
                    continue
                seen.add((st.st_dev, st.st_ino))
                total += st.st_blocks * 512
    except (FileNotFoundError, NotADirectoryError, PermissionError):
        pass
    return total
