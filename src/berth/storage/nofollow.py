"""Opening paths inside a kernel's scratch so that a link or a swapped entry cannot redirect it.

The one mechanism behind every host-side access to a scratch (the agent runs as root there, the
kernel's user can write `work/` and `config/ipc/`): a trusted *base* directory (the scratch root
or a kernel dir the agent made) is opened normally, every component below it with
``O_NOFOLLOW`` relative to its parent's descriptor. A symlink at any component fails with
ELOOP/ENOTDIR instead of being followed, and a component swapped after a check is never looked
up by name again, so there is no check-then-use window.

Reads are bounded and open with ``O_NONBLOCK`` (a FIFO put in place of a file cannot stall the
agent) and refuse anything but a regular file. Writes go to a fresh ``O_EXCL`` temp file that is
renamed over the target inside the same directory descriptor. A Unix socket is pinned by an
``O_PATH | O_NOFOLLOW`` descriptor of the socket inode itself, checked to be a socket, and
connected through ``/proc/self/fd/N``: what is connected is the inode that was checked.
"""

from __future__ import annotations

import errno
import os
import stat
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager, suppress
from pathlib import Path

from berth.errors import FileAccessDenied, InvalidArgument

__all__ = [
    "BASE_FLAGS",
    "DIR_FLAGS",
    "READ_FLAGS",
    "FileTooLarge",
    "lstat_at",
    "open_dir",
    "open_socket",
    "read_bounded",
    "read_file",
    "split",
    "unlink_at",
    "write_file",
]

BASE_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC
DIR_FLAGS = BASE_FLAGS | os.O_NOFOLLOW
READ_FLAGS = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC
_WRITE_FLAGS = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
_PATH_FLAGS = os.O_PATH | os.O_NOFOLLOW | os.O_CLOEXEC
_TMP_PREFIX = ".berth-tmp-"

OpenAt = Callable[[str, int, int], int]  # (name, dir_fd, flags) -> fd


class FileTooLarge(FileAccessDenied):
    pass


def split(rel: str | Sequence[str]) -> tuple[str, ...]:
    """Components of a relative path; '', '.', '..' and absolute paths are refused."""
    parts = tuple(rel.split("/")) if isinstance(rel, str) else tuple(rel)
    if not parts or any(p in ("", ".", "..") or "/" in p or "\x00" in p for p in parts):
        raise InvalidArgument(f"not a relative path below a scratch dir: {rel!r}", field="path")
    return parts


def _open_at(name: str, dir_fd: int, flags: int) -> int:
    return os.open(name, flags, dir_fd=dir_fd)


@contextmanager
def open_dir(base: Path | int, parts: Sequence[str], *,
             open_at: OpenAt = _open_at) -> Iterator[int]:
    """Descriptor of base/parts; every component of `parts` opened without following links.

    `base` is a trusted path (or a descriptor, which stays the caller's). `open_at` lets a
    caller turn a failure of one component into its own error (see storage.files)."""
    fd = os.open(base, BASE_FLAGS) if not isinstance(base, int) else os.dup(base)
    try:
        for name in parts:
            nxt = open_at(name, fd, DIR_FLAGS)
            os.close(fd)
            fd = nxt
        yield fd
    finally:
        os.close(fd)


def read_bounded(fd: int, limit: int, path: str) -> bytes:
    """All of a regular file's bytes, refusing more than `limit` (also when it grows)."""
    st = os.fstat(fd)
    if not stat.S_ISREG(st.st_mode):
        raise InvalidArgument(f"{path}: not a regular file", field="path", path=path)
    if st.st_size > limit:
        raise FileTooLarge(f"{path}: {st.st_size} bytes exceed the limit of {limit}",
                           path=path, size=st.st_size, limit=limit)
    chunks, total = [], 0
    while chunk := os.read(fd, 1 << 20):
        total += len(chunk)
        if total > limit:
            raise FileTooLarge(f"{path}: grew past the limit of {limit}", path=path,
                               limit=limit)
        chunks.append(chunk)
    return b"".join(chunks)


def read_file(base: Path | int, rel: str | Sequence[str], limit: int) -> bytes:
    """A regular file below `base`, at most `limit` bytes. OSError (ELOOP for a link) or
    InvalidArgument (not a regular file: a FIFO, a socket, a directory) when it is not one."""
    parts = split(rel)
    with open_dir(base, parts[:-1]) as dir_fd:
        fd = os.open(parts[-1], READ_FLAGS, dir_fd=dir_fd)
        try:
            return read_bounded(fd, limit, "/".join(parts))
        finally:
            os.close(fd)


def lstat_at(base: Path | int, rel: str | Sequence[str]) -> os.stat_result | None:
    """The entry itself (a link is reported as a link), or None when it or a parent is missing.
    A link or non-directory on the way raises OSError (ELOOP/ENOTDIR)."""
    parts = split(rel)
    try:
        with open_dir(base, parts[:-1]) as dir_fd:
            return os.lstat(parts[-1], dir_fd=dir_fd)
    except FileNotFoundError:
        return None


def unlink_at(base: Path | int, rel: str | Sequence[str]) -> None:
    """Remove a non-directory entry (a link is removed, never its target); missing is fine."""
    parts = split(rel)
    try:
        with open_dir(base, parts[:-1]) as dir_fd:
            os.unlink(parts[-1], dir_fd=dir_fd)
    except FileNotFoundError:
        pass


def write_file(base: Path | int, rel: str | Sequence[str], data: bytes, *, mode: int = 0o644,
               uid: int | None = None, gid: int | None = None, durable: bool = True) -> None:
    """Atomically replace base/rel with `data`: an O_EXCL temp file in the same directory
    descriptor, fsynced, owned and moded through its descriptor, then renamed over the name.
    Whatever was at the name (a link, a file) is replaced, never written through.

    `durable=False` skips both fsyncs (file and directory): for what need not survive a host
    crash (a kernel's own files, gone with its container), still atomic for readers."""
    parts = split(rel)
    with open_dir(base, parts[:-1]) as dir_fd:
        tmp = f"{_TMP_PREFIX}{os.urandom(6).hex()}"
        fd = os.open(tmp, _WRITE_FLAGS, 0o600, dir_fd=dir_fd)
        try:
            try:
                view = memoryview(data)
                while view:
                    view = view[os.write(fd, view):]
                if uid is not None or gid is not None:
                    os.fchown(fd, -1 if uid is None else uid, -1 if gid is None else gid)
                os.fchmod(fd, mode)
                if durable:
                    os.fsync(fd)
            finally:
                os.close(fd)
            os.rename(tmp, parts[-1], src_dir_fd=dir_fd, dst_dir_fd=dir_fd)
        except BaseException:
            with suppress(OSError):
                os.unlink(tmp, dir_fd=dir_fd)
            raise
        if durable:
            os.fsync(dir_fd)


def open_socket(dir_fd: int, name: str) -> int:
    """An O_PATH descriptor of the socket inode `name` in `dir_fd`, for ``/proc/self/fd/N``.

    Refused (OSError ELOOP / ENOTSOCK) when the entry is a link or anything but a socket on
    the directory's own filesystem, so a connect through it reaches only that inode."""
    fd = os.open(name, _PATH_FLAGS, dir_fd=dir_fd)
    try:
        st = os.fstat(fd)
        if stat.S_ISLNK(st.st_mode):
            raise OSError(errno.ELOOP, f"{name} is a symbolic link")
        if not stat.S_ISSOCK(st.st_mode) or st.st_dev != os.fstat(dir_fd).st_dev:
            raise OSError(errno.ENOTSOCK, f"{name} is not a socket of this directory")
    except BaseException:
        os.close(fd)
        raise
    return fd
