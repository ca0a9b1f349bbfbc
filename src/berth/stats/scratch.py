"""Disk usage of a kernel's scratch directory (blocking I/O: run it in a thread)."""

from __future__ import annotations

import os
from pathlib import Path


def scratch_usage(path: Path) -> int:
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
