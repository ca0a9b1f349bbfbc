"""Confined file access to a kernel's /home/work from the host side.

A user path (relative to /home/work, or absolute under it) is mapped by `locate` (pure) to a
trusted host directory — the scratch `work/`, or the host path of the vfolder mounted at the
longest matching kernel path — plus the path components below it. `..` components, paths
outside /home/work and NUL bytes are refused before any I/O.

The host side never follows a symlink: every component is opened relative to its parent's
descriptor with O_NOFOLLOW, so a link created inside the kernel (whose target means
something only in the container's namespace) cannot lead the agent elsewhere, even if it
is swapped in between a check and the use. Symlinks are listed and archived as links;
an upload never writes through or replaces one.

A failed or refused operation changes nothing: uploads are checked completely first, then
written to a temporary file that is renamed into place; on failure the temporary file and
any directory the upload created are removed again.
"""

from __future__ import annotations

import asyncio
import errno
import io
import json
import logging
import os
import stat
import tarfile
from collections.abc import Iterator, Sequence
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any, TypedDict

from berth.errors import FileAccessDenied, InvalidArgument, QuotaExceeded, StorageError
from berth.storage.nofollow import DIR_FLAGS as _DIR_FLAGS
from berth.storage.nofollow import READ_FLAGS as _READ_FLAGS
from berth.storage.nofollow import FileTooLarge
from berth.storage.nofollow import open_dir as _nofollow_dir
from berth.storage.nofollow import read_bounded as _read_all
from berth.storage.vfolders import WORK, VFolderMount

log = logging.getLogger(__name__)

DEFAULT_MAX_UPLOAD_BYTES = 100 * 1024 * 1024
DEFAULT_MAX_DOWNLOAD_BYTES = 1024 * 1024  # Backend.AI's download_file limit
_TMP_PREFIX = ".berth-upload-"


class KernelFileNotFound(InvalidArgument):
    pass


class FileEntry(TypedDict):
    mode: str
    size: int
    ctime: float
    mtime: float
    atime: float
    filename: str


@dataclass(frozen=True)
class Target:
    kernel_path: PurePosixPath
    base: Path
    parts: tuple[str, ...]
    read_only: bool


def _denied(path: str, reason: str) -> FileAccessDenied:
    return FileAccessDenied(f"{path!r}: {reason}", path=path, reason=reason)


def locate(user_path: str, work_dir: Path, mounts: Sequence[VFolderMount] = ()) -> Target:
    """Map a user path to (trusted host dir, components below it) without touching disk."""
    if not isinstance(user_path, str) or "\x00" in user_path:
        raise _denied(str(user_path), "not a valid path")
    raw = PurePosixPath(user_path or ".")
    if ".." in raw.parts:
        raise _denied(user_path, "'..' is not allowed")
    kernel = PurePosixPath("/" + str(raw).lstrip("/")) if raw.is_absolute() else WORK / raw
    if kernel != WORK and WORK not in kernel.parents:
        raise _denied(user_path, "outside /home/work")
    best: VFolderMount | None = None
    for m in mounts:
        under = m.kernel_path == kernel or m.kernel_path in kernel.parents
        if under and WORK in m.kernel_path.parents and (
                best is None or len(m.kernel_path.parts) > len(best.kernel_path.parts)):
            best = m
    if best is None:
        return Target(kernel, work_dir, kernel.relative_to(WORK).parts, False)
    return Target(kernel, best.host_path, kernel.relative_to(best.kernel_path).parts,
                  best.perm.read_only)


def _classify(err: OSError, target: Target, name: str, dir_fd: int) -> Exception:
    path = str(target.kernel_path)
    if err.errno == errno.ENOENT:
        return KernelFileNotFound(f"{path}: no such file or directory", field="path",
                                  path=path)
    with suppress(OSError):
        if stat.S_ISLNK(os.lstat(name, dir_fd=dir_fd).st_mode):
            return _denied(path, f"{name!r} is a symbolic link")
    if err.errno in (errno.ENOTDIR, errno.ELOOP):
        return InvalidArgument(f"{path}: {name!r} is not a directory", field="path", path=path)
    return StorageError(f"{path}: {err.strerror}", path=path, errno=err.errno)


def _open_at(target: Target, name: str, dir_fd: int, flags: int) -> int:
    try:
        return os.open(name, flags, dir_fd=dir_fd)
    except OSError as e:
        raise _classify(e, target, name, dir_fd) from None


@contextmanager
def _fd(fd: int) -> Iterator[int]:
    try:
        yield fd
    finally:
        os.close(fd)


@contextmanager
def _open_dir(target: Target, parts: Sequence[str]) -> Iterator[int]:
    """Descriptor of base/parts, each component opened without following links."""
    with _nofollow_dir(target.base, parts,
                       open_at=lambda name, fd, flags: _open_at(target, name, fd, flags)) as fd:
        yield fd


@contextmanager
def _open_target(target: Target) -> Iterator[int]:
    """Descriptor of the target itself (a file or a directory), links refused."""
    if not target.parts:
        with _open_dir(target, ()) as fd:
            yield fd
        return
    with (_open_dir(target, target.parts[:-1]) as parent,
          _fd(_open_at(target, target.parts[-1], parent, _READ_FLAGS)) as fd):
        yield fd


def _entry(name: str, st: os.stat_result) -> FileEntry:
    return FileEntry(mode=stat.filemode(st.st_mode), size=st.st_size, ctime=st.st_ctime,
                     mtime=st.st_mtime, atime=st.st_atime, filename=name)


class _TarBuilder:
    """Writes a tar of a descriptor tree into memory, refusing to pass `limit` bytes."""

    def __init__(self, tar: tarfile.TarFile, buf: io.BytesIO, limit: int, path: str) -> None:
        self.tar, self.buf = tar, buf
        self.limit, self.path = limit, path

    def _check(self, extra: int) -> None:
        if self.buf.tell() + extra > self.limit:
            raise FileTooLarge(f"{self.path}: archive exceeds the limit of {self.limit} bytes",
                               path=self.path, limit=self.limit)

    def _info(self, arcname: str, st: os.stat_result, kind: bytes) -> tarfile.TarInfo:
        info = tarfile.TarInfo(arcname)
        info.type, info.mode, info.mtime = kind, stat.S_IMODE(st.st_mode), int(st.st_mtime)
        info.uid, info.gid = st.st_uid, st.st_gid
        return info

    def add(self, fd: int, arcname: str) -> None:
        st = os.fstat(fd)
        if stat.S_ISDIR(st.st_mode):
            self._check(512)
            self.tar.addfile(self._info(arcname, st, tarfile.DIRTYPE))
            self._add_children(fd, arcname)
        elif stat.S_ISREG(st.st_mode):
            self._check(1024 + st.st_size)
            info = self._info(arcname, st, tarfile.REGTYPE)
            data = _read_all(fd, st.st_size, self.path)
            info.size = len(data)
            self.tar.addfile(info, io.BytesIO(data))
        else:
            raise InvalidArgument(f"{self.path}: not a file or directory", field="path",
                                  path=self.path)

    def _add_children(self, dir_fd: int, arcname: str) -> None:
        with os.scandir(dir_fd) as it:
            names = sorted(e.name for e in it)
        for name in names:
            child = f"{arcname}/{name}"
            try:
                st = os.lstat(name, dir_fd=dir_fd)
                if stat.S_ISLNK(st.st_mode):
                    info = self._info(child, st, tarfile.SYMTYPE)
                    info.linkname = os.readlink(name, dir_fd=dir_fd)
                    self._check(1024)
                    self.tar.addfile(info)
                    continue
                if not (stat.S_ISDIR(st.st_mode) or stat.S_ISREG(st.st_mode)):
                    continue  # sockets, fifos, devices are not archived
                flags = _DIR_FLAGS if stat.S_ISDIR(st.st_mode) else _READ_FLAGS
                with _fd(os.open(name, flags, dir_fd=dir_fd)) as fd:
                    self.add(fd, child)
            except FileNotFoundError:
                continue  # vanished while we walked



class KernelFiles:
    """File operations on one kernel's /home/work (and the vfolders mounted under it)."""

    def __init__(self, work_dir: Path, *, mounts: Sequence[VFolderMount] = (),
                 uid: int | None = None, gid: int | None = None,
                 max_upload_bytes: int = DEFAULT_MAX_UPLOAD_BYTES,
                 max_download_bytes: int = DEFAULT_MAX_DOWNLOAD_BYTES) -> None:
        self.work_dir = work_dir
        self.mounts = tuple(mounts)
        self.uid, self.gid = uid, gid
        self.max_upload_bytes = max_upload_bytes
        self.max_download_bytes = max_download_bytes

    def locate(self, path: str) -> Target:
        return locate(path, self.work_dir, self.mounts)

    async def upload(self, path: str, data: bytes) -> None:
        await asyncio.to_thread(self.upload_sync, path, data)

    async def download_tar(self, path: str) -> bytes:
        return await asyncio.to_thread(self.download_tar_sync, path)

    async def download_single(self, path: str) -> bytes:
        return await asyncio.to_thread(self.download_single_sync, path)

    async def list_files(self, path: str) -> list[FileEntry]:
        return await asyncio.to_thread(self.list_files_sync, path)

    # --- synchronous implementations (run in a worker thread) ---------------------------

    def download_single_sync(self, path: str) -> bytes:
        target = self.locate(path)
        with _open_target(target) as fd:
            return _read_all(fd, self.max_download_bytes, str(target.kernel_path))

    def download_tar_sync(self, path: str) -> bytes:
        target = self.locate(path)
        kpath, limit, buf = str(target.kernel_path), self.max_download_bytes, io.BytesIO()
        with (_open_target(target) as fd,
              tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tar):
            _TarBuilder(tar, buf, limit, kpath).add(fd, target.kernel_path.name)
        if len(buf.getvalue()) > limit:
            raise FileTooLarge(f"{kpath}: archive exceeds the limit of {limit} bytes",
                               path=kpath, limit=limit, size=len(buf.getvalue()))
        return buf.getvalue()

    def list_files_sync(self, path: str) -> list[FileEntry]:
        target = self.locate(path)
        with _open_dir(target, target.parts) as fd:
            with os.scandir(fd) as it:
                names = sorted(e.name for e in it)
            entries = []
            for name in names:
                with suppress(FileNotFoundError):
                    entries.append(_entry(name, os.lstat(name, dir_fd=fd)))
        return entries

    def upload_sync(self, path: str, data: bytes) -> None:
        target = self.locate(path)
        kpath = str(target.kernel_path)
        if len(data) > self.max_upload_bytes:
            raise FileTooLarge(f"{kpath}: {len(data)} bytes exceed the upload limit of "
                               f"{self.max_upload_bytes}", path=kpath, size=len(data),
                               limit=self.max_upload_bytes)
        if target.read_only:
            raise _denied(kpath, "read-only mount")
        if not target.parts:
            raise InvalidArgument(f"{kpath}: is a directory", field="path", path=kpath)
        existing, missing = self._plan_parents(target)
        _Upload(self, target, existing, missing).run(data)

    def _plan_parents(self, target: Target) -> tuple[tuple[str, ...], tuple[str, ...]]:
        """Split parent components into existing dirs and ones to create; check the leaf."""
        parents = target.parts[:-1]
        fd = os.open(target.base, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        try:
            depth = 0
            for name in parents:
                try:
                    nxt = os.open(name, _DIR_FLAGS, dir_fd=fd)
                except FileNotFoundError:
                    break
                except OSError as e:
                    raise _classify(e, target, name, fd) from None
                os.close(fd)
                fd, depth = nxt, depth + 1
            if depth == len(parents):
                _check_leaf(target, target.parts[-1], fd)
        finally:
            os.close(fd)
        return parents[:depth], parents[depth:]


def _check_leaf(target: Target, name: str, dir_fd: int) -> None:
    try:
        st = os.lstat(name, dir_fd=dir_fd)
    except FileNotFoundError:
        return
    if stat.S_ISLNK(st.st_mode):
        raise _denied(str(target.kernel_path), f"{name!r} is a symbolic link")
    if not stat.S_ISREG(st.st_mode):
        raise InvalidArgument(f"{target.kernel_path}: exists and is not a regular file",
                              field="path", path=str(target.kernel_path))


class _Upload:
    """The writing half of an upload, undone completely when it fails."""

    def __init__(self, files: KernelFiles, target: Target, existing: tuple[str, ...],
                 missing: tuple[str, ...]) -> None:
        self.files, self.target = files, target
        self.existing, self.missing = existing, missing
        self.created: list[tuple[int, str]] = []  # (parent fd, name), in creation order
        self.fds: list[int] = []

    def run(self, data: bytes) -> None:
        try:
            parent = self._make_parents()
            self._write(parent, data)
        except BaseException:
            self._undo()
            raise
        finally:
            for fd in reversed(self.fds):
                os.close(fd)
        log.info("uploaded %d bytes to %s", len(data), self.target.kernel_path)

    def _chown(self, name: str, dir_fd: int) -> None:
        uid, gid = self.files.uid, self.files.gid
        if uid is not None or gid is not None:
            os.chown(name, -1 if uid is None else uid, -1 if gid is None else gid,
                     dir_fd=dir_fd, follow_symlinks=False)

    def _make_parents(self) -> int:
        fd = os.open(self.target.base, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        self.fds.append(fd)
        for name in self.existing:
            fd = _open_at(self.target, name, fd, _DIR_FLAGS)
            self.fds.append(fd)
        for name in self.missing:
            _io(self.target, os.mkdir, name, 0o755, dir_fd=fd)
            self.created.append((fd, name))
            self._chown(name, fd)
            fd = _open_at(self.target, name, fd, _DIR_FLAGS)
            self.fds.append(fd)
        return fd

    def _write(self, parent: int, data: bytes) -> None:
        tmp = f"{_TMP_PREFIX}{os.urandom(6).hex()}"
        flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
        fd = _io(self.target, os.open, tmp, flags, 0o644, dir_fd=parent)
        self.created.append((parent, tmp))
        with _fd(fd):
            view = memoryview(data)
            while view:
                view = view[_io(self.target, os.write, fd, view):]
            os.fchmod(fd, 0o644)
        self._chown(tmp, parent)
        _check_leaf(self.target, self.target.parts[-1], parent)
        os.rename(tmp, self.target.parts[-1], src_dir_fd=parent, dst_dir_fd=parent)
        self.created.pop()

    def _undo(self) -> None:
        for dir_fd, name in reversed(self.created):
            with suppress(OSError):
                if name.startswith(_TMP_PREFIX):
                    os.unlink(name, dir_fd=dir_fd)
                else:
                    os.rmdir(name, dir_fd=dir_fd)


def _io(target: Target, fn: Any, *args: Any, **kwargs: Any) -> Any:
    """Run one write-side call, turning ENOSPC/EDQUOT into QuotaExceeded."""
    try:
        return fn(*args, **kwargs)
    except OSError as e:
        if e.errno in (errno.ENOSPC, errno.EDQUOT):
            raise QuotaExceeded(f"{target.kernel_path}: scratch quota exhausted",
                                path=str(target.kernel_path)) from None
        raise


def list_files_reply(path: str, entries: list[FileEntry] | None,
                     error: str = "") -> dict[str, Any]:
    """Backend.AI's `list_files` RPC result: files as a JSON string, errors, abspath."""
    return {"files": json.dumps(entries or []), "errors": error, "abspath": path}
