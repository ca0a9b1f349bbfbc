"""The one edge of storage to the host's mount machinery: mount, umount, mkfs, losetup.

Only this module runs those commands. `parse_mountinfo` is pure and reads the format of
`/proc/self/mountinfo`; `SystemMounter` is the real implementation of the `Mounter` role,
and tests may pass any other object with the same methods.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from berth.errors import StorageError

log = logging.getLogger(__name__)

COMMAND_TIMEOUT_S = 60.0


@dataclass(frozen=True)
class MountEntry:
    mount_point: Path
    fstype: str
    source: str


class CommandFailed(StorageError):
    """A mount/umount/mkfs/losetup command exited non-zero or ran too long."""

    def __init__(self, argv: list[str], returncode: int | None, stderr: str) -> None:
        super().__init__(
            f"{' '.join(argv)} failed ({returncode}): {stderr.strip()}",
            argv=argv, returncode=returncode, stderr=stderr,
        )
        self.argv = argv
        self.returncode = returncode
        self.stderr = stderr


def _unescape(field: str) -> str:
    """mountinfo escapes space, tab, newline and backslash as \\ooo octal."""
    if "\\" not in field:  # nearly every field: nothing to undo
        return field
    out, i = [], 0
    while i < len(field):
        code = field[i + 1:i + 4]
        if field[i] == "\\" and len(code) == 3 and all(c in "01234567" for c in code):
            out.append(chr(int(code, 8)))
            i += 4
        else:
            out.append(field[i])
            i += 1
    return "".join(out)


def parse_mountinfo(text: str) -> list[MountEntry]:
    """Parse /proc/self/mountinfo lines into entries (malformed lines are skipped)."""
    entries = []
    for line in text.splitlines():
        left, sep, right = line.partition(" - ")
        fields, tail = left.split(), right.split()
        if not sep or len(fields) < 5 or len(tail) < 2:
            continue
        entries.append(MountEntry(Path(_unescape(fields[4])), tail[0], _unescape(tail[1])))
    return entries


def mounts_under(entries: list[MountEntry], path: Path) -> list[Path]:
    """Mount points at or below `path`, deepest first (the order to unmount them in)."""
    found = {e.mount_point for e in entries
             if e.mount_point == path or path in e.mount_point.parents}
    return sorted(found, key=lambda p: len(p.parts), reverse=True)


class Mounter(Protocol):
    async def mkfs_ext4(self, image: Path) -> None: ...
    async def mount_loop(self, image: Path, target: Path) -> None: ...
    async def mount_tmpfs(self, target: Path, size_bytes: int) -> None: ...
    async def umount(self, target: Path, *, lazy: bool = False) -> None: ...
    async def bind(self, source: Path, target: Path) -> None: ...
    async def loop_devices(self, image: Path) -> list[str]: ...
    async def detach_loop(self, device: str) -> None: ...
    def mounts(self) -> list[MountEntry]: ...


class SystemMounter:
    """Runs the util-linux / e2fsprogs commands; needs root."""

    def __init__(self, mountinfo: Path = Path("/proc/self/mountinfo")) -> None:
        self._mountinfo = mountinfo

    async def mkfs_ext4(self, image: Path) -> None:
        # -m 0: no root-reserved blocks, so the kernel's user gets the whole quota.
        await _run(["mkfs.ext4", "-q", "-F", "-m", "0", str(image)])

    async def mount_loop(self, image: Path, target: Path) -> None:
        await _run(["mount", "-o", "loop,nosuid,nodev", str(image), str(target)])
        # Direct I/O: the loop worker then writes the image in the submitting kernel's blkio
        # cgroup instead of through the host's page cache (flushed by nobody's cgroup), so
        # the kernel's block-I/O rules and counters on the backing disk see its /home/work.
        for device in await self.loop_devices(image):
            try:
                await _run(["losetup", "--direct-io=on", device])
            except CommandFailed as e:
                log.warning("loop device %s of %s stays buffered (%s): its I/O is throttled "
                            "on the loop device only and not counted", device, image,
                            e.stderr.strip())

    async def mount_tmpfs(self, target: Path, size_bytes: int) -> None:
        opts = f"size={size_bytes},mode=0755,nosuid,nodev"
        await _run(["mount", "-t", "tmpfs", "-o", opts, "tmpfs", str(target)])

    async def umount(self, target: Path, *, lazy: bool = False) -> None:
        await _run(["umount", *(["-l"] if lazy else []), str(target)])

    async def bind(self, source: Path, target: Path) -> None:
        await _run(["mount", "--bind", str(source), str(target)])

    async def loop_devices(self, image: Path) -> list[str]:
        out = await _run(["losetup", "-j", str(image)])
        return [line.split(":", 1)[0] for line in out.splitlines() if ":" in line]

    async def detach_loop(self, device: str) -> None:
        await _run(["losetup", "-d", device])

    def mounts(self) -> list[MountEntry]:
        return parse_mountinfo(self._mountinfo.read_text())


async def _run(argv: list[str]) -> str:
    log.debug("running %s", argv)
    proc = await asyncio.create_subprocess_exec(
        *argv, stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )
    talk = asyncio.ensure_future(asyncio.wait_for(proc.communicate(), COMMAND_TIMEOUT_S))
    try:
        out, err = await asyncio.shield(talk)
    except asyncio.CancelledError:
        # The command runs on regardless (a mount, a losetup): let it end (it is bounded too)
        # before the caller moves on, so a removal that follows finds what it did.
        await asyncio.wait([talk])
        if not talk.cancelled() and isinstance(talk.exception(), TimeoutError):
            proc.kill()
            await proc.wait()
        raise
    except TimeoutError:
        proc.kill()
        await proc.wait()
        raise CommandFailed(argv, None, f"timed out after {COMMAND_TIMEOUT_S}s") from None
    if proc.returncode != 0:
        raise CommandFailed(argv, proc.returncode, err.decode(errors="replace"))
    return out.decode(errors="replace")
