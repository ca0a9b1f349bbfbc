"""Disk usage of a kernel's scratch directory (blocking I/O: run it in a thread)."""

from __future__ import annotations

import os
from pathlib import Path


def scratch_usage(path: Path) -> int:
    """Bytes used by a kernel's scratch: a file system of its own (hostfile's loop-mounted
    image, memory's tmpfs) is asked with statvfs, at once; a plain directory is walked."""
    try:
        own_fs = os.lstat(path).st_dev != os.lstat(path.parent).st_dev
    except FileNotFoundError:
        return 0
    if own_fs:
        st = os.statvfs(path)
        return (st.f_blocks - st.f_bfree) * st.f_frsize
    return allocated_under(path)


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
