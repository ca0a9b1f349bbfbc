"""Agent side of a runner's ready signal: a FIFO in the kernel's ipc dir, read by the event loop.

The agent makes ``config/ipc/runner.ready`` (`protocol.READY_FIFO`) before the container starts
and holds it open read-write (so it never sees end-of-file and a writer never blocks); the
runner writes a byte to it once it answers ``status`` with ready. The descriptor is watched by
the loop (`add_reader`), so a starting kernel costs no polling at all.

The FIFO lives in a directory the kernel's user can write: anything there can write it, remove
it or put something else in its place. So it is only a wake-up: the agent confirms readiness
with ``status`` on the runner's socket, and without a wake-up it still asks now and then.
The FIFO is made and opened through directory descriptors (`storage.nofollow`), never
followed through a link, and checked to be a FIFO once open.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import stat
from collections.abc import Callable, Sequence
from pathlib import Path

from berth.runner.kernel_side.protocol import READY_FIFO
from berth.storage import nofollow

__all__ = ["READY_FIFO", "ReadySignal"]

log = logging.getLogger(__name__)

_READ_CHUNK = 4096
_OPEN_FLAGS = os.O_RDWR | os.O_NONBLOCK | os.O_NOFOLLOW | os.O_CLOEXEC


class ReadySignal:
    """One kernel's ready FIFO, open in the agent; ``on_signal`` runs in the loop per wake-up."""

    def __init__(self, fd: int, base: Path, rel: tuple[str, ...],
                 on_signal: Callable[[], None]) -> None:
        self._fd = fd
        self._base = base
        self._rel = rel
        self._on_signal = on_signal
        self._loop = asyncio.get_running_loop()
        self._loop.add_reader(fd, self._readable)
        self.signals = 0  # wake-ups seen (a test and a log line read it)

    @classmethod
    def open(cls, kernel_dir: Path, ipc_rel: Sequence[str], uid: int, gid: int,
             on_signal: Callable[[], None]) -> ReadySignal:
        """Make a fresh FIFO in ``kernel_dir/ipc_rel`` (whatever had its name is removed; a
        directory there raises OSError) for the kernel's ``uid``/``gid`` to write."""
        rel = (*nofollow.split(ipc_rel), READY_FIFO)
        with nofollow.open_dir(kernel_dir, rel[:-1]) as ipc:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(READY_FIFO, dir_fd=ipc)
            os.mkfifo(READY_FIFO, 0o600, dir_fd=ipc)
            fd = os.open(READY_FIFO, _OPEN_FLAGS, dir_fd=ipc)
        try:
            if not stat.S_ISFIFO(os.fstat(fd).st_mode):
                raise OSError(f"{READY_FIFO} was replaced before it was opened")
            os.fchown(fd, uid, gid)
            os.fchmod(fd, 0o600)
            return cls(fd, kernel_dir, rel, on_signal)
        except BaseException:
            os.close(fd)
            raise

    def _readable(self) -> None:
        try:
            data = os.read(self._fd, _READ_CHUNK)  # one read a turn: a flood cannot pin the loop
        except BlockingIOError:
            return
        except OSError as exc:
            log.warning("ready signal %s: %s", "/".join(self._rel), exc)
            self._loop.remove_reader(self._fd)
            return
        if data:
            self.signals += 1
            self._on_signal()

    def close(self) -> None:
        """Stop watching and remove the FIFO (a later runner's write then finds no reader)."""
        if self._fd < 0:
            return
        self._loop.remove_reader(self._fd)
        os.close(self._fd)
        self._fd = -1
        try:
            nofollow.unlink_at(self._base, self._rel)
        except OSError as exc:
            log.debug("ready signal %s not removed: %s", "/".join(self._rel), exc)
