"""Validate vfolder mounts (Backend.AI `VFolderMount` shape) and build Docker `Mounts`.

A mount arrives as `{name, host_path, kernel_path?, mount_perm, ...}`; extra keys (vfid,
vfsubpath, usage_mode) are ignored. Rules:
  * the host path, symlinks resolved, must exist, be a directory and lie inside one of the
    configured allowed roots (also resolved);
  * the kernel path (default `/home/work/{name}`) must be absolute and normalised, must not
    be or lie under a system path (`/home/config`, `/opt`, `/proc`, `/sys`, `/dev`, `/etc`,
    `/tmp`, `/usr`, …), must not be `/`, `/home` or `/home/work` itself, and must not use a
    reserved name directly under `/home/work` (`.ssh`, `.jupyter`, `.terminfo`,
    `.tmux.conf`, `.*rc`, `.*_profile`); two mounts may not share a kernel path;
  * `mount_perm`: `ro` → read-only, `rw` → read-write, `wd` (rw-delete; `rw-delete` is
    accepted as an alias) → read-write, because a bind mount cannot allow writes while
    forbidding deletes (Backend.AI downgrades it the same way).
Every refusal is a `MountRefused` naming the field (`mounts[i].kernel_path`, …).

The only I/O is resolving host paths, done through an injectable `resolve` callable.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path, PurePosixPath
from typing import Any

from berth.errors import MountRefused
from berth.storage.scratch import ScratchPaths

WORK = PurePosixPath("/home/work")
CONFIG = PurePosixPath("/home/config")
IPC = CONFIG / "ipc"
SOCK = CONFIG / "sock"
RUNNER = PurePosixPath("/opt/berth/runner")  # where the runner files are mounted

_RESERVED_TREES = tuple(PurePosixPath(p) for p in (
    "/home/config", "/opt", "/proc", "/sys", "/dev", "/etc", "/tmp", "/usr", "/bin", "/sbin",
    "/lib", "/lib32", "/lib64", "/libx32", "/boot", "/run", "/var", "/root",
))
_RESERVED_EXACT = tuple(PurePosixPath(p) for p in ("/", "/home", "/home/work"))
_RESERVED_NAMES = frozenset({".ssh", ".jupyter", ".terminfo", ".tmux.conf"})
_RESERVED_NAME_RES = (re.compile(r"^\.[a-z0-9]+rc$"), re.compile(r"^\.[a-z0-9]+_profile$"))
_NAME_RE = re.compile(r"^[^/\x00]{1,255}$")


class MountPerm(StrEnum):
    RO = "ro"
    RW = "rw"
    WD = "wd"

    @property
    def read_only(self) -> bool:
        return self is MountPerm.RO


@dataclass(frozen=True)
class VFolderMount:
    name: str
    host_path: Path  # resolved
    kernel_path: PurePosixPath
    perm: MountPerm

    def to_docker(self) -> dict[str, Any]:
        return bind_mount(self.host_path, self.kernel_path, read_only=self.perm.read_only)


def bind_mount(source: Path, target: PurePosixPath, *, read_only: bool) -> dict[str, Any]:
    return {"Type": "bind", "Source": str(source), "Target": str(target),
            "ReadOnly": read_only}


def _resolve_strict(path: Path) -> Path:
    return path.resolve(strict=True)


def check_kernel_path(raw: str, field: str) -> PurePosixPath:
    if not isinstance(raw, str) or "\x00" in raw or not raw.startswith("/"):
        raise MountRefused("kernel path must be an absolute path", field=field, value=raw)
    path = PurePosixPath(raw)
    if ".." in path.parts or os.path.normpath(raw) != raw or raw.startswith("//"):
        raise MountRefused("kernel path must be normalised (no '..', '.', '//')",
                           field=field, value=raw)
    if path in _RESERVED_EXACT or any(path == t or t in path.parents
                                      for t in _RESERVED_TREES):
        raise MountRefused(f"kernel path {path} is reserved", field=field, value=raw)
    if WORK in path.parents:
        first = path.relative_to(WORK).parts[0]
        if first in _RESERVED_NAMES or any(r.match(first) for r in _RESERVED_NAME_RES):
            raise MountRefused(f"{first!r} under /home/work is reserved", field=field,
                               value=raw)
    return path


def check_host_path(raw: Any, allowed_roots: Sequence[Path], field: str,
                    resolve: Callable[[Path], Path]) -> Path:
    if not isinstance(raw, str | os.PathLike) or not os.path.isabs(raw) or "\x00" in str(raw):
        raise MountRefused("host path must be an absolute path", field=field, value=str(raw))
    try:
        host = resolve(Path(raw))
    except (OSError, RuntimeError):
        raise MountRefused(f"host path {raw} does not exist", field=field,
                           value=str(raw)) from None
    if not host.is_dir():
        raise MountRefused(f"host path {raw} is not a directory", field=field, value=str(raw))
    for root in allowed_roots:
        try:
            real_root = resolve(root)
        except (OSError, RuntimeError):
            continue
        if host == real_root or real_root in host.parents:
            return host
    raise MountRefused(f"host path {raw} (resolved {host}) is outside the allowed roots",
                       field=field, value=str(raw), allowed_roots=[str(r) for r in allowed_roots])


def _check_perm(raw: Any, field: str) -> MountPerm:
    value = "wd" if raw == "rw-delete" else raw
    try:
        return MountPerm(value)
    except ValueError:
        raise MountRefused("mount_perm must be ro, rw or wd (rw-delete)", field=field,
                           value=str(raw)) from None


def parse_mount(raw: Mapping[str, Any], allowed_roots: Sequence[Path], index: int = 0,
                *, resolve: Callable[[Path], Path] = _resolve_strict) -> VFolderMount:
    prefix = f"mounts[{index}]"
    name = raw.get("name")
    if not isinstance(name, str) or not _NAME_RE.match(name) or name in (".", ".."):
        raise MountRefused("name must be a non-empty file name", field=f"{prefix}.name",
                           value=str(name))
    kernel_raw = raw.get("kernel_path") or str(WORK / name)
    kernel_path = check_kernel_path(str(kernel_raw), f"{prefix}.kernel_path")
    host = check_host_path(raw.get("host_path"), allowed_roots, f"{prefix}.host_path", resolve)
    perm = _check_perm(raw.get("mount_perm", "ro"), f"{prefix}.mount_perm")
    return VFolderMount(name, host, kernel_path, perm)


def parse_mounts(raws: Sequence[Mapping[str, Any]], allowed_roots: Sequence[Path],
                 *, resolve: Callable[[Path], Path] = _resolve_strict) -> list[VFolderMount]:
    """Validate every mount; the first bad one raises MountRefused. Sorted parents first."""
    mounts: list[VFolderMount] = []
    for i, raw in enumerate(raws):
        if not isinstance(raw, Mapping):
            raise MountRefused("a mount must be an object", field=f"mounts[{i}]")
        m = parse_mount(raw, allowed_roots, i, resolve=resolve)
        if any(other.kernel_path == m.kernel_path for other in mounts):
            raise MountRefused(f"two mounts target {m.kernel_path}",
                               field=f"mounts[{i}].kernel_path", value=str(m.kernel_path))
        mounts.append(m)
    return sorted(mounts, key=lambda m: len(m.kernel_path.parts))


def docker_mounts(mounts: Sequence[VFolderMount]) -> list[dict[str, Any]]:
    return [m.to_docker() for m in mounts]


def intrinsic_mounts(paths: ScratchPaths, runner_dir: Path) -> list[dict[str, Any]]:
    """Scratch and runner mounts of every kernel, parents before children."""
    return [
        bind_mount(paths.config_dir, CONFIG, read_only=True),
        bind_mount(paths.ipc_dir, IPC, read_only=False),
        bind_mount(paths.sock_dir, SOCK, read_only=False),  # sealed root's once bound
        bind_mount(paths.work_dir, WORK, read_only=False),
        bind_mount(runner_dir, RUNNER, read_only=True),
    ]
