"""Disk usage of a kernel's scratch directory (blocking I/O: run it in a thread)."""

from __future__ import annotations

import os
from pathlib import Path


def scratch_usage(path: Path) -> int:
    """Bytes allocated under `path` (st_blocks × 512, hard links counted once, no symlinks)."""
    seen: set[tuple[int, int]] = set()
    total = 0
    stack = [str(path)]
    while stack:
        try:
            entries = list(os.scandir(stack.pop()))
        except (FileNotFoundError, NotADirectoryError, PermissionError):
            continue
        for entry in entries:
            try:
                st = entry.stat(follow_symlinks=False)
            except FileNotFoundError:
                continue
            if (st.st_dev, st.st_ino) in seen:
                continue
            seen.add((st.st_dev, st.st_ino))
            total += st.st_blocks * 512
            if entry.is_dir(follow_symlinks=False):
                stack.append(entry.path)
    return total
