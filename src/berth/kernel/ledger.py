"""The crash-safe kernel ledger: one JSON file per kernel in its scratch ``config/`` directory.

An entry is written atomically (temp file, fsync, rename, fsync of the directory) before the
container exists, rewritten when the container id or state changes, and disappears with the
scratch directory, which is removed last. No pickle: plain JSON that any tool can read.
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from berth.errors import StorageError

__all__ = ["LEDGER_FILENAME", "Ledger", "LedgerEntry"]

LEDGER_FILENAME = "berth-ledger.json"
_VERSION = 1


@dataclass(frozen=True)
class LedgerEntry:
    kernel_id: str
    session_id: str
    agent_id: str
    spec: dict[str, Any]
    allocation: dict[str, Any]
    host_ports: dict[str, list[int]]
    uid: int
    gid: int
    state: str
    container_id: str | None = None
    created_at: float = 0.0
    image_id: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    def with_changes(self, **changes: Any) -> LedgerEntry:
        return LedgerEntry(**{**asdict(self), **changes})

    def to_json(self) -> dict[str, Any]:
        return {"version": _VERSION, **asdict(self)}

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> LedgerEntry:
        data = dict(data)
        data.pop("version", None)
        return cls(**data)


class Ledger:
    """Reads and writes ledger entries under ``{scratch_root}/{kernel_id}/config/``."""

    def __init__(self, scratch_root: Path) -> None:
        self._root = scratch_root

    def path(self, kernel_id: str) -> Path:
        return self._root / kernel_id / "config" / LEDGER_FILENAME

    def write(self, entry: LedgerEntry) -> None:
        target = self.path(entry.kernel_id)
        tmp = target.with_suffix(".tmp")
        payload = json.dumps(entry.to_json(), sort_keys=True).encode()
        try:
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            try:
                os.write(fd, payload)
                os.fsync(fd)
            finally:
                os.close(fd)
            os.replace(tmp, target)
            dir_fd = os.open(target.parent, os.O_RDONLY)
            try:
                os.fsync(dir_fd)
            finally:
                os.close(dir_fd)
        except OSError as exc:
            raise StorageError(f"cannot write ledger for {entry.kernel_id}: {exc}",
                               kernel_id=entry.kernel_id) from exc

    def read(self, kernel_id: str) -> LedgerEntry | None:
        """The entry, or None when absent or unreadable (a torn write never renames in)."""
        try:
            return LedgerEntry.from_json(json.loads(self.path(kernel_id).read_bytes()))
        except (OSError, ValueError, TypeError):
            return None
