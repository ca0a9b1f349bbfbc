"""Docker's ``json-file`` container log, read from its end: what ``docker logs --tail N`` prints.

Each line of ``<id>-json.log`` is one entry, ``{"log": "...", "stream": "stdout", "time": ...}``;
the engine rotates the file to ``<id>-json.log.1`` (Berth's containers keep two files). Pure:
it reads binary files the caller opened, so they can be opened before the container and its
directory are removed and read after (an open file outlives its name).
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from typing import BinaryIO

__all__ = ["last_entries", "tail_text"]

_BLOCK = 64 * 1024


def last_entries(file: BinaryIO, n: int) -> list[bytes]:
    """The last ``n`` complete lines of ``file`` (without their newlines), oldest first."""
    if n <= 0:
        return []
    pos = file.seek(0, os.SEEK_END)
    chunks: list[bytes] = []
    newlines = 0
    while pos > 0 and newlines <= n:  # n lines need n + 1 newlines, or the file's start
        step = min(_BLOCK, pos)
        pos -= step
        file.seek(pos)
        chunk = file.read(step)
        chunks.append(chunk)
        newlines += chunk.count(b"\n")
    lines = b"".join(reversed(chunks)).split(b"\n")
    if pos > 0:
        lines = lines[1:]  # the piece before the first newline read may be a partial line
    return [line for line in lines if line][-n:]


def tail_text(files: Sequence[BinaryIO], n: int) -> str:
    """The output of the last ``n`` entries across ``files`` (newest file first), in order;
    a line that is not a JSON entry (cut by a crash) is skipped."""
    entries: list[bytes] = []
    for file in files:
        if len(entries) >= n:
            break
        entries[:0] = last_entries(file, n - len(entries))
    return "".join(_text(entry) for entry in entries)


def _text(entry: bytes) -> str:
    try:
        value = json.loads(entry).get("log", "")
    except (ValueError, AttributeError):
        return ""
    return value if isinstance(value, str) else ""
