"""Per-kernel scratch storage: `{root}/{kernel_id}/{config,config/ipc,config/sock,work}`.

Types (environment §10; the kernel here has no ext4/XFS project quota):
  hostdir   a plain directory, no quota (size must be 0).
  hostfile  a sparse ext4 image `{root}/{kernel_id}.img` loop-mounted at the kernel dir, so
            config/ and work/ both live inside the quota. The image is built under
            `{kernel_id}.img.tmp` and renamed only after mkfs succeeded, so a crash never
            leaves a half-formatted image under the final name.
  memory    a tmpfs of the given size mounted at the kernel dir (lost on host reboot).

`create` is "ensure": every step checks what exists, so it completes a half-made scratch
and never wipes an intact one (restart keeps scratch). `open` adopts an existing one and
refuses to invent it. `remove` is idempotent and safe on any half-created state.

The kernel's user can write `work/`, `config/ipc/` and, until the runner has bound its socket,
`config/sock/`; everything here touches those through `storage.nofollow` (no component below
the kernel dir is followed if it is a link) and walks them by descriptor. `seal` hands
`config/sock/` to root (0755) once the runner's socket is in it, so the kernel cannot rename or
replace the socket the agent connects to; `unseal` gives it back for a new container.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import os
import re
import shutil
import stat
from collections.abc import Callable
from contextlib import suppress
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path
from typing import Any, NamedTuple

from berth.errors import ConfigError, InvalidArgument, StorageError
from berth.storage import nofollow
from berth.storage.mounter import CommandFailed, Mounter, SystemMounter, mounts_under
from berth.types import KernelId

log = logging.getLogger(__name__)
SOCKET_NAME = "runner.sock"  # the runner binds it in the kernel's config/sock

MIN_QUOTA_BYTES = 8 * 1024 * 1024
USAGE_WALK_LIMIT = 100_000
_KERNEL_ID_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,127}$")
_IMG, _IMG_TMP = ".img", ".img.tmp"


class ScratchType(StrEnum):
    HOSTDIR = "hostdir"
    HOSTFILE = "hostfile"
    MEMORY = "memory"


class ScratchLost(StorageError):
    """The scratch's backing store is gone (e.g. a memory scratch after a host reboot)."""


@dataclass(frozen=True)
class ScratchPaths:
    kernel_id: KernelId
    kernel_dir: Path
    config_dir: Path
    ipc_dir: Path
    work_dir: Path
    image: Path | None
    sock_dir: Path  # the runner's socket; sealed (root-owned) once the socket is bound

    @property
    def runner_socket(self) -> Path:
        return self.sock_dir / SOCKET_NAME


class ScratchUsage(NamedTuple):
    used_bytes: int
    quota_bytes: int  # 0: no quota (hostdir)


def check_kernel_id(kernel_id: str) -> KernelId:
    """A kernel id becomes a file name: one safe path component, never an image name."""
    if not _KERNEL_ID_RE.match(kernel_id) or kernel_id.endswith((_IMG, _IMG_TMP)):
        raise InvalidArgument(f"not a usable kernel id: {kernel_id!r}", field="kernel_id")
    return KernelId(kernel_id)


def _check_size(scratch_type: ScratchType, size_bytes: int) -> None:
    if scratch_type is ScratchType.HOSTDIR and size_bytes != 0:
        raise ConfigError("hostdir scratch has no quota; set scratch-size to 0 or use "
                          "hostfile/memory", key_path="container.scratch-size")
    if scratch_type is not ScratchType.HOSTDIR and size_bytes < MIN_QUOTA_BYTES:
        raise ConfigError(f"{scratch_type} scratch needs a size of at least "
                          f"{MIN_QUOTA_BYTES} bytes, got {size_bytes}",
                          key_path="container.scratch-size")


class ScratchManager:
    def __init__(self, root: Path, scratch_type: ScratchType | str, size_bytes: int,
                 *, mounter: Mounter | None = None) -> None:
        try:
            self.scratch_type = ScratchType(scratch_type)
        except ValueError:
            raise ConfigError(f"unknown scratch type {scratch_type!r}",
                              key_path="container.scratch-type") from None
        _check_size(self.scratch_type, size_bytes)
        self.root = root.resolve()
        self.size_bytes = size_bytes
        self._mounter: Mounter = mounter or SystemMounter()
        self._locks: dict[str, asyncio.Lock] = {}

    def paths(self, kernel_id: str) -> ScratchPaths:
        kid = check_kernel_id(kernel_id)
        kdir = self.root / kid
        image = self.root / f"{kid}{_IMG}" if self.scratch_type is ScratchType.HOSTFILE else None
        return ScratchPaths(kid, kdir, kdir / "config", kdir / "config" / "ipc",
                            kdir / "work", image, kdir / "config" / "sock")

    def _lock(self, kernel_id: str) -> asyncio.Lock:
        return self._locks.setdefault(kernel_id, asyncio.Lock())

    # --- create / open -------------------------------------------------------------------

    async def create(self, kernel_id: str, uid: int | None, gid: int | None) -> ScratchPaths:
        """Make (or complete) the kernel's scratch; an intact one is left as it is. A
        cancellation (a deadline, a destroy) lets a step under way (a thread, a mount command)
        finish before it raises, so a removal that follows finds what the step made."""
        paths = self.paths(kernel_id)
        async with self._lock(paths.kernel_id):
            self.root.mkdir(parents=True, exist_ok=True)
            if paths.image is not None:
                await self._ensure_image(paths.image)
            paths.kernel_dir.mkdir(mode=0o755, exist_ok=True)
            await self._mount_backing(paths, fresh_ok=True)
            await _in_thread(_make_layout, paths, uid, gid)
        log.info("scratch ready for kernel %s (%s, %d bytes)", paths.kernel_id,
                 self.scratch_type, self.size_bytes)
        return paths

    async def open(self, kernel_id: str) -> ScratchPaths:
        """Adopt an existing scratch (agent restart, host reboot); never creates one."""
        paths = self.paths(kernel_id)
        async with self._lock(paths.kernel_id):
            await self._mount_backing(paths, fresh_ok=False)
            for d in (paths.config_dir, paths.ipc_dir, paths.work_dir):
                if not _is_real_dir(paths.kernel_dir, d):
                    raise StorageError(f"scratch of kernel {paths.kernel_id} is incomplete: "
                                       f"{d} missing", kernel_id=paths.kernel_id, path=str(d))
        return paths

    # --- the runner's socket directory ---------------------------------------------------

    def seal(self, kernel_id: str) -> os.stat_result | None:
        """Make `config/sock/` root's (0755): the kernel can no longer rename, replace or add
        entries there. Returns what `runner.sock` is now (lstat), None when absent."""
        paths = self.paths(kernel_id)
        with nofollow.open_dir(paths.kernel_dir, ("config", "sock")) as fd:
            os.fchown(fd, os.geteuid(), os.getegid())
            os.fchmod(fd, 0o755)
            try:
                return os.lstat(SOCKET_NAME, dir_fd=fd)
            except FileNotFoundError:
                return None

    def unseal(self, kernel_id: str, uid: int | None, gid: int | None) -> None:
        """For a new container: drop the old socket, give `config/sock/` to the kernel user."""
        paths = self.paths(kernel_id)
        with nofollow.open_dir(paths.kernel_dir, ("config",)) as config:
            _ensure_dir(config, "sock", 0o700, uid, gid)
            with nofollow.open_dir(config, ("sock",)) as fd:
                with suppress(FileNotFoundError):
                    os.unlink(SOCKET_NAME, dir_fd=fd)
                _own(fd, 0o700, uid, gid)

    async def ensure_mounted(self, kernel_id: str) -> None:
        """Re-mount the backing store if it is not mounted (hostfile after a reboot)."""
        paths = self.paths(kernel_id)
        async with self._lock(paths.kernel_id):
            await self._mount_backing(paths, fresh_ok=False)

    async def _ensure_image(self, image: Path) -> None:
        if await asyncio.to_thread(image.exists):
            return
        tmp = image.with_name(image.name + ".tmp")
        await _in_thread(_sparse_file, tmp, self.size_bytes)
        await self._mounter.mkfs_ext4(tmp)
        os.replace(tmp, image)

    async def _mount_backing(self, paths: ScratchPaths, *, fresh_ok: bool) -> None:
        kid = paths.kernel_id
        if self.scratch_type is ScratchType.HOSTDIR or self.is_mounted(kid):
            if not paths.kernel_dir.is_dir():
                raise StorageError(f"no scratch for kernel {kid}", kernel_id=kid)
            return
        if self.scratch_type is ScratchType.MEMORY and not fresh_ok:
            raise ScratchLost(f"memory scratch of kernel {kid} is not mounted (lost)",
                              kernel_id=kid)
        if paths.image is not None and not paths.image.exists():
            raise StorageError(f"no scratch image for kernel {kid}", kernel_id=kid,
                               path=str(paths.image))
        paths.kernel_dir.mkdir(mode=0o755, exist_ok=True)
        if paths.image is not None:
            await self._mounter.mount_loop(paths.image, paths.kernel_dir)
        else:
            await self._mounter.mount_tmpfs(paths.kernel_dir, self.size_bytes)

    async def take_over(self, source: ScratchManager, source_id: str,
                        kernel_id: str) -> ScratchPaths:
        """Make another manager's scratch (a warm-pool container's, same type and size, same
        filesystem) this kernel's, without touching what a running container bound from it:
        a plain dir is renamed (bind mounts follow the inode); a mounted one is bind-mounted
        at its new place and unmounted at the old (the container's binds keep the filesystem),
        its image file renamed along."""
        old, new = source.paths(source_id), self.paths(kernel_id)
        if new.kernel_dir.exists() or (new.image is not None and new.image.exists()):
            raise StorageError(f"scratch of kernel {new.kernel_id} exists already",
                               kernel_id=new.kernel_id)
        async with source._lock(old.kernel_id), self._lock(new.kernel_id):
            if self.scratch_type is ScratchType.HOSTDIR:
                os.rename(old.kernel_dir, new.kernel_dir)
            else:
                new.kernel_dir.mkdir(mode=0o755)
                await self._mounter.bind(old.kernel_dir, new.kernel_dir)
                await source._unmount_all(old.kernel_id, old.kernel_dir)
                old.kernel_dir.rmdir()
                if old.image is not None and new.image is not None:
                    os.rename(old.image, new.image)
        source._locks.pop(old.kernel_id, None)
        log.info("scratch of %s is now kernel %s's", old.kernel_id, new.kernel_id)
        return new

    # --- inspect -------------------------------------------------------------------------

    def is_mounted(self, kernel_id: str) -> bool:
        kdir = self.paths(kernel_id).kernel_dir
        if self.scratch_type is ScratchType.HOSTDIR:
            return kdir.is_dir()
        return any(e.mount_point == kdir for e in self._mounter.mounts())

    def scan(self) -> set[KernelId]:
        """Kernel ids with anything under root: a dir, an image (or its tmp), a mount."""
        found: set[KernelId] = set()
        names = os.listdir(self.root) if self.root.is_dir() else []
        names += [str(m.relative_to(self.root)).split("/")[0]
                  for m in mounts_under(self._mounter.mounts(), self.root) if m != self.root]
        for name in names:
            for suffix in (_IMG_TMP, _IMG):
                name = name.removesuffix(suffix)
            if _KERNEL_ID_RE.match(name):
                found.add(KernelId(name))
        return found

    async def usage(self, kernel_id: str) -> ScratchUsage:
        """Used and quota bytes: statvfs for mounted types, a bounded walk for hostdir."""
        paths = self.paths(kernel_id)
        if self.scratch_type is ScratchType.HOSTDIR:
            return ScratchUsage(await asyncio.to_thread(_walk_usage, paths.kernel_dir), 0)
        if not self.is_mounted(paths.kernel_id):
            raise StorageError(f"scratch of kernel {paths.kernel_id} is not mounted",
                               kernel_id=paths.kernel_id)
        st = os.statvfs(paths.kernel_dir)
        return ScratchUsage((st.f_blocks - st.f_bfree) * st.f_frsize, self.size_bytes)

    # --- remove --------------------------------------------------------------------------

    async def remove(self, kernel_id: str) -> None:
        """Unmount, detach, delete; a no-op when nothing is left. Works on any type's remains."""
        kid = check_kernel_id(kernel_id)
        kdir, image = self.root / kid, self.root / f"{kid}{_IMG}"
        async with self._lock(kid):
            await self._unmount_all(kid, kdir)
            for img in (image, image.with_name(image.name + ".tmp")):
                await self._detach_loops(img)
            if kdir.is_dir() and not kdir.is_symlink():
                if not shutil.rmtree.avoids_symlink_attacks:  # fd-based rmtree (Linux)
                    raise StorageError("this platform's rmtree may follow links", path=str(kdir))
                await asyncio.to_thread(shutil.rmtree, kdir)
            for path in (kdir, image, image.with_name(image.name + ".tmp")):
                if path.is_symlink() or path.is_file():
                    path.unlink()
        self._locks.pop(kid, None)
        log.info("scratch of kernel %s removed", kid)

    async def _unmount_all(self, kid: KernelId, kdir: Path) -> None:
        for _ in range(8):  # stacked mounts: unmount until none is left
            points = mounts_under(self._mounter.mounts(), kdir)
            if not points:
                return
            for point in points:
                try:
                    await self._mounter.umount(point)
                except CommandFailed as e:
                    log.warning("umount %s failed (%s); detaching lazily", point, e.stderr.strip())
                    await self._mounter.umount(point, lazy=True)
        raise StorageError(f"cannot unmount the scratch of kernel {kid}", kernel_id=kid,
                           mounts=[str(p) for p in mounts_under(self._mounter.mounts(), kdir)])

    async def _detach_loops(self, image: Path) -> None:
        if not await asyncio.to_thread(image.exists):
            return
        for dev in await self._mounter.loop_devices(image):
            log.info("detaching leftover loop device %s of %s", dev, image)
            await self._mounter.detach_loop(dev)


def _make_layout(paths: ScratchPaths, uid: int | None, gid: int | None) -> None:
    """config/ (0755, root), config/ipc/ (0770) and config/sock/ (0700) and work/ (0755) of
    the kernel user. Made and owned through descriptors: a link in their place is refused."""
    with nofollow.open_dir(paths.kernel_dir, ()) as kdir:
        _ensure_dir(kdir, "config", 0o755, None, None)
        with nofollow.open_dir(kdir, ("config",)) as config:
            _ensure_dir(config, "ipc", 0o770, uid, gid)
            _ensure_dir(config, "sock", 0o700, uid, gid)
        _ensure_dir(kdir, "work", 0o755, uid, gid)


def _ensure_dir(parent: int, name: str, mode: int, uid: int | None, gid: int | None) -> None:
    """Create `name` in `parent` with mode and owner; an existing directory is left as it is."""
    try:
        os.mkdir(name, mode, dir_fd=parent)
    except FileExistsError:
        st = os.lstat(name, dir_fd=parent)
        if not stat.S_ISDIR(st.st_mode):
            raise StorageError(f"refusing scratch dir {name!r}: not a directory (a link?)",
                               path=name) from None
        return
    with nofollow.open_dir(parent, (name,)) as fd:
        _own(fd, mode, uid, gid)


def _own(fd: int, mode: int, uid: int | None, gid: int | None) -> None:
    if uid is not None or gid is not None:
        os.fchown(fd, -1 if uid is None else uid, -1 if gid is None else gid)
    os.fchmod(fd, mode)  # mkdir's mode is filtered by the umask


def _is_real_dir(kernel_dir: Path, d: Path) -> bool:
    try:
        st = nofollow.lstat_at(kernel_dir, d.relative_to(kernel_dir).parts)
    except OSError:
        return False
    return st is not None and stat.S_ISDIR(st.st_mode)


def _sparse_file(path: Path, size: int) -> None:
    with open(path, "wb") as f:
        f.truncate(size)


def _walk_usage(top: Path) -> int:
    """Allocated bytes under top, stopping after USAGE_WALK_LIMIT entries (a lower bound).
    Walked by descriptor (os.fwalk): a directory swapped for a link is never entered."""
    total, seen = 0, 0
    for _dirpath, dirnames, filenames, dir_fd in os.fwalk(top):
        for name in dirnames + filenames:
            seen += 1
            if seen > USAGE_WALK_LIMIT:
                return total
            try:
                total += os.lstat(name, dir_fd=dir_fd).st_blocks * 512
            except OSError:
                continue
    return total



async def _in_thread(fn: Callable[..., None], *args: Any) -> None:
    """``fn(*args)`` in a worker thread. A thread cannot be stopped: a cancellation waits for
    it to finish and then raises (else a removal would race it: rmtree while it makes dirs)."""
    done = asyncio.get_running_loop().run_in_executor(None, functools.partial(fn, *args))
    try:
        await asyncio.shield(done)
    except asyncio.CancelledError:
        await asyncio.wait([done])
        raise
