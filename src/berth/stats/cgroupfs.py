"""The cgroupfs edge: locate a container's cgroup dirs and read its counters (blocking I/O).

Every root is injectable so the same code reads the checked-in fixture trees in tests.
Calls block on the filesystem; the collector runs a whole cycle's reads in one worker thread.

A container's counter files are opened once and read again from offset 0 every cycle (cgroupfs
and /proc regenerate a file's contents on each read at offset 0): a `pread` on an open
descriptor costs a fifth of an open/read/close. Descriptors are held within a budget (half the
open-file limit above 1,024); past it, a container's files are opened per read as before.
"""

from __future__ import annotations

import errno
import logging
import os
import resource
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Collection
from pathlib import Path

from berth.stats import cgroup
from berth.stats.models import CgroupVersion, ContainerSample, KernelTarget, NetCounters

log = logging.getLogger(__name__)

_CHUNK = 8192
_GONE = (errno.ENOENT, errno.ESRCH, errno.ENODEV)  # cgroup removed, process gone
_NET = "net/dev"
_Key = tuple[str, int]
# Limits change only when a container is updated live (a warm-pool claim, before the kernel
# is first read; an operator's `docker update`): a held container's limit files are not held
# open but read by path every `_LIMITS_EVERY` reads (a minute at the default 5 s cycle), their
# last contents kept between: a third fewer reads per cycle and descriptors per container.
_LIMIT_FILES = frozenset({"cpu.cfs_quota_us", "cpu.cfs_period_us", "memory.limit_in_bytes",
                          "cpu.max", "memory.max", "pids.max"})
_LIMITS_EVERY = 12


def _read(path: Path | None) -> str | None:
    if path is None:
        return None
    try:
        return path.read_text()
    except (FileNotFoundError, ProcessLookupError):
        return None


_local = threading.local()


def _buffer() -> bytearray:
    buf: bytearray | None = getattr(_local, "buf", None)
    if buf is None:
        buf = _local.buf = bytearray(_CHUNK)
    return buf


def _pread(fd: int) -> str:
    """The whole file from offset 0 (one syscall for every counter file but large stats).

    Read into the thread's own buffer: an `os.pread` of 8 KiB allocates (with malloc, in the
    reading thread's arena) and shrinks a bytes object per file, thousands a cycle."""
    buf = _buffer()
    n = os.preadv(fd, [buf], 0)
    if n < _CHUNK:
        return str(memoryview(buf)[:n], "utf-8")
    parts = [bytes(buf)]
    offset = n
    while chunk := os.pread(fd, _CHUNK, offset):
        parts.append(chunk)
        offset += len(chunk)
    return b"".join(parts).decode()


def _open(path: str) -> int | None:
    try:
        return os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    except OSError as exc:
        if exc.errno in _GONE:
            return None
        raise


def read_path(path: str) -> str | None:
    """A small /proc or cgroupfs file's contents; None when it (or its process) is gone."""
    return _read_path(path)


def _read_path(path: str) -> str | None:
    fd = _open(path)
    if fd is None:
        return None
    try:
        return _pread(fd)
    finally:
        os.close(fd)


class _Files:
    """The counter files of one container (name → path), held open or opened per read.

    `busy` counts reads in progress; a handle retired while busy is closed by its last reader,
    so a descriptor is never closed under a read (and its number reused by another file).
    Once held, `paths` keeps only the limit files, read every `_LIMITS_EVERY` reads."""

    __slots__ = ("busy", "fds", "limits", "paths", "reads", "retired")

    def __init__(self, paths: dict[str, str]) -> None:
        self.paths = paths
        self.fds: dict[str, int | None] | None = None
        self.limits: dict[str, str | None] = {}
        self.reads = 0
        self.busy = 0
        self.retired = False

    def open(self) -> int:
        """Open every file but the limits (absent ones stay None); returns how many
        descriptors it holds."""
        fds: dict[str, int | None] = {}
        try:
            for name, path in self.paths.items():
                if name not in _LIMIT_FILES:
                    fds[name] = _open(path)
        except BaseException:
            _close_all(fds)
            raise
        self.fds = fds
        self.paths = {name: path for name, path in self.paths.items() if name in _LIMIT_FILES}
        return sum(fd is not None for fd in fds.values())

    def read(self) -> dict[str, str | None]:
        if self.fds is None:
            return {name: _read_path(path) for name, path in self.paths.items()}
        out: dict[str, str | None] = {}
        for name, fd in self.fds.items():
            try:
                out[name] = _pread(fd) if fd is not None else None
            except OSError as exc:
                if exc.errno not in _GONE:
                    raise
                out[name] = None
        if self.reads % _LIMITS_EVERY == 0:
            self.limits = {name: _read_path(path) for name, path in self.paths.items()}
        self.reads += 1
        out.update(self.limits)
        return out

    def close(self) -> int:
        closed = _close_all(self.fds or {})
        self.fds = None
        return closed


def _close_all(fds: dict[str, int | None]) -> int:
    count = 0
    for fd in fds.values():
        if fd is not None:
            os.close(fd)
            count += 1
    return count


def default_fd_budget() -> int:
    """Descriptors the reader may hold: half of the open-file limit above 1,024."""
    soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft == resource.RLIM_INFINITY:
        return 1 << 16
    return max(0, (soft - 1024) // 2)


class CgroupReader:
    """Reads `ContainerSample`s for containers from cgroupfs and their netns's /proc net/dev."""

    def __init__(
        self,
        *,
        cgroup_root: Path = Path("/sys/fs/cgroup"),
        proc_root: Path = Path("/proc"),
        clk_tck: int | None = None,
        clock: Callable[[], float] = time.monotonic,
        net_exclude: frozenset[str] = frozenset({"lo"}),
        cache_size: int = 2048,
        fd_budget: Callable[[], int] = default_fd_budget,
    ) -> None:
        self._cgroup_root = cgroup_root
        self._proc_root = proc_root
        self._clk_tck = clk_tck or os.sysconf("SC_CLK_TCK")
        self._clock = clock
        self._net_exclude = net_exclude
        self._cache: OrderedDict[_Key, cgroup.CgroupDirs] = OrderedDict()
        self._cache_size = cache_size
        self._mounts: str | None = None
        self._files: dict[_Key, _Files] = {}
        self._fd_budget = fd_budget
        self._open_fds = 0
        self._lock = threading.Lock()

    @property
    def open_fds(self) -> int:
        """Descriptors held for counter files now."""
        return self._open_fds

    def locate(self, container_id: str, pid: int) -> cgroup.CgroupDirs:
        """The container's cgroup dirs: from /proc/<pid>/cgroup, else Docker's default layout."""
        key = (container_id, pid)
        with self._lock:
            if key in self._cache:
                self._cache.move_to_end(key)
                return self._cache[key]
        own = _read(self._proc_root / str(pid) / "cgroup") if pid > 0 else None
        try:
            dirs = self._locate(container_id, own, self._cgroup_mounts())
        except cgroup.CgroupParseError:  # mounts changed since they were cached: once more
            self._mounts = None
            dirs = self._locate(container_id, own, self._cgroup_mounts())
        with self._lock:
            self._cache[key] = dirs
            if len(self._cache) > self._cache_size:
                self._cache.popitem(last=False)
        return dirs

    def _locate(self, container_id: str, own: str | None, mounts: str) -> cgroup.CgroupDirs:
        if own is not None:
            return cgroup.locate(own, mounts, self._cgroup_root)
        return cgroup.guess_docker_dirs(mounts, self._cgroup_root, container_id)

    def _cgroup_mounts(self) -> str:
        """/proc/mounts, read once: it grows with every container's overlay mount, while the
        cgroup mounts in it stay put for the agent's life."""
        if self._mounts is None:
            text = _read(self._proc_root / "mounts") or ""
            self._mounts = "".join(line for line in text.splitlines(keepends=True)
                                   if " cgroup" in line)  # the overlay mounts are not kept
        return self._mounts

    def forget(self, container_id: str) -> None:
        self.retain_where(lambda cid: cid != container_id)

    def retain(self, container_ids: Collection[str]) -> None:
        """Forget every container not in ``container_ids`` (those of the live kernels)."""
        self.retain_where(lambda cid: cid in container_ids)

    def retain_where(self, keep: Callable[[str], bool]) -> None:
        with self._lock:
            for key in [k for k in self._cache if not keep(k[0])]:
                del self._cache[key]
            for key in [k for k in self._files if not keep(k[0])]:
                self._retire(self._files.pop(key))

    def close(self) -> None:
        """Close every held descriptor (reads in progress close theirs when done)."""
        self.retain_where(lambda cid: False)

    def _retire(self, files: _Files) -> None:
        files.retired = True
        if not files.busy:
            self._open_fds -= files.close()

    def read_net(self, pid: int) -> NetCounters:
        text = _read(self._proc_root / str(pid) / "net" / "dev") if pid > 0 else None
        if text is None:
            return NetCounters()
        return cgroup.parse_net_dev(text, self._net_exclude)

    def read(self, target: KernelTarget) -> ContainerSample:
        dirs = self.locate(target.container_id, target.pid)
        key = (target.container_id, target.pid)
        files = self._acquire(key, dirs, target.pid)
        try:
            texts = files.read()
        finally:
            self._release(files)
        net_text = texts.pop(_NET, None)
        net = (cgroup.parse_net_dev(net_text, self._net_exclude) if net_text is not None
               else NetCounters())
        at = self._clock()
        try:
            if dirs.version is CgroupVersion.V2:
                return cgroup.sample_v2(texts, taken_at=at, net=net)
            return cgroup.sample_v1(texts, clk_tck=self._clk_tck, taken_at=at, net=net)
        except cgroup.CgroupParseError:
            self._drop(key)  # a cgroup not there yet or gone: open afresh next time
            raise

    def _acquire(self, key: _Key, dirs: cgroup.CgroupDirs, pid: int) -> _Files:
        with self._lock:
            files = self._files.get(key)
            if files is None:
                files = self._files[key] = _Files(self._paths(dirs, pid))
                if self._open_fds + len(files.paths) <= self._fd_budget():
                    self._open_fds += files.open()
            files.busy += 1
            return files

    def _release(self, files: _Files) -> None:
        with self._lock:
            files.busy -= 1
            if files.retired and not files.busy:
                self._open_fds -= files.close()

    def _drop(self, key: _Key) -> None:
        with self._lock:
            files = self._files.pop(key, None)
            if files is not None:
                self._retire(files)

    def _paths(self, dirs: cgroup.CgroupDirs, pid: int) -> dict[str, str]:
        names = cgroup.V2_FILES if dirs.version is CgroupVersion.V2 else tuple(cgroup.V1_FILES)
        paths = {name: str(path) for name in names if (path := dirs.path_of(name)) is not None}
        if pid > 0:
            paths[_NET] = str(self._proc_root / str(pid) / "net" / "dev")
        return paths

    def read_pids(self, target: KernelTarget) -> list[int]:
        """Host PIDs of the processes in the container's cgroup (`docker exec`ed ones too)."""
        dirs = self.locate(target.container_id, target.pid)
        v2 = dirs.version is CgroupVersion.V2
        base = dirs.dirs.get("") if v2 else dirs.dirs.get("pids") or dirs.dirs.get("memory")
        text = _read(base / "cgroup.procs" if base is not None else None)
        return sorted({int(line) for line in (text or "").split() if line.isdigit()})

    def oom_kill_count(self, container_id: str, pid: int = 0) -> int | None:
        """The memory cgroup's oom_kill counter now; None when the cgroup is gone or silent."""
        dirs = self.locate(container_id, pid)
        if dirs.version is CgroupVersion.V2:
            text = _read(dirs.path_of("memory.events"))
        else:
            text = _read(dirs.path_of("memory.oom_control"))
        if text is None:
            return None
        return cgroup.parse_keyed(text).get("oom_kill")
