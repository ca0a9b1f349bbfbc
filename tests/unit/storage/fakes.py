"""An in-memory Mounter: records commands and keeps a mount table, with injectable failures."""

from __future__ import annotations

from pathlib import Path

from berth.storage import CommandFailed, MountEntry


class FakeMounter:
    def __init__(self) -> None:
        self.table: list[MountEntry] = []
        self.loops: dict[str, Path] = {}
        self.calls: list[tuple[str, str]] = []
        self.fail: set[str] = set()  # names of methods that raise CommandFailed
        self.busy: set[Path] = set()  # targets whose plain umount fails

    def _maybe_fail(self, name: str, arg: Path | str) -> None:
        self.calls.append((name, str(arg)))
        if name in self.fail:
            raise CommandFailed([name, str(arg)], 32, f"{name} failed on purpose")

    async def mkfs_ext4(self, image: Path) -> None:
        self._maybe_fail("mkfs_ext4", image)

    async def mount_loop(self, image: Path, target: Path) -> None:
        self._maybe_fail("mount_loop", target)
        dev = f"/dev/loop{len(self.loops)}"
        self.loops[dev] = image
        self.table.append(MountEntry(target, "ext4", dev))

    async def mount_tmpfs(self, target: Path, size_bytes: int) -> None:
        self._maybe_fail("mount_tmpfs", target)
        self.table.append(MountEntry(target, "tmpfs", "tmpfs"))

    async def umount(self, target: Path, *, lazy: bool = False) -> None:
        self._maybe_fail("umount_lazy" if lazy else "umount", target)
        if target in self.busy and not lazy:
            raise CommandFailed(["umount", str(target)], 32, "target is busy")
        for i in reversed(range(len(self.table))):
            if self.table[i].mount_point == target:
                entry = self.table.pop(i)
                if not any(e.source == entry.source for e in self.table):
                    self.loops.pop(entry.source, None)  # autoclear, once the last mount goes
                return
        raise CommandFailed(["umount", str(target)], 32, "not mounted")

    async def bind(self, source: Path, target: Path) -> None:
        self._maybe_fail("bind", target)
        entry = next(e for e in self.table if e.mount_point == source)
        self.table.append(MountEntry(target, entry.fstype, entry.source))

    async def loop_devices(self, image: Path) -> list[str]:
        return [dev for dev, img in self.loops.items() if img == image]

    async def detach_loop(self, device: str) -> None:
        self._maybe_fail("detach_loop", device)
        self.loops.pop(device)

    def mounts(self) -> list[MountEntry]:
        return list(self.table)
