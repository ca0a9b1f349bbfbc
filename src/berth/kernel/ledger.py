"""The crash-safe kernel ledger: one JSON file per kernel in its scratch ``config/`` directory.

An entry is written atomically (temp file, fsync, rename, fsync of the directory) before the
container exists, rewritten when the container id or state changes, and disappears with the
scratch directory, which is removed last. No pickle: plain JSON that any tool can read.

Every access goes through `storage.nofollow` below the scratch root: a link at the kernel dir,
`config/` or the file itself is refused, never followed; reads are bounded.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from berth.errors import BerthError, StorageError
from berth.storage import nofollow
from berth.types import KernelId

__all__ = ["LEDGER_FILENAME", "Ledger", "LedgerEntry"]

LEDGER_FILENAME = "berth-ledger.json"
_VERSION = 1
MAX_LEDGER_BYTES = 16 * 1024 * 1024


@dataclass(frozen=True)
class LedgerEntry:
    kernel_id: KernelId
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

    def path(self, kernel_id: KernelId) -> Path:
        return self._root / kernel_id / "config" / LEDGER_FILENAME

    def _parts(self, kernel_id: KernelId) -> tuple[str, ...]:
        return (kernel_id, "config", LEDGER_FILENAME)

    def write(self, entry: LedgerEntry) -> None:
        self.write_encoded(entry.kernel_id, self.encode(entry))

    @staticmethod
    def encode(entry: LedgerEntry) -> bytes:
        return json.dumps(entry.to_json(), sort_keys=True).encode()

    def write_encoded(self, kernel_id: KernelId, payload: bytes) -> None:
        """Write what ``encode`` made (durable when this returns); safe in any thread."""
        try:
            nofollow.write_file(self._root, self._parts(kernel_id), payload, mode=0o600)
        except (OSError, BerthError) as exc:
            raise StorageError(f"cannot write ledger for {kernel_id}: {exc}",
                               kernel_id=kernel_id) from exc

    def read(self, kernel_id: KernelId) -> LedgerEntry | None:
        """The entry, or None when absent or unreadable (a torn write never renames in)."""
        try:
            raw = nofollow.read_file(self._root, self._parts(kernel_id), MAX_LEDGER_BYTES)
            return LedgerEntry.from_json(json.loads(raw))
        except (OSError, ValueError, TypeError, BerthError):
            return None
