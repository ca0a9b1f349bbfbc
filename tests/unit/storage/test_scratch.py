from __future__ import annotations

import asyncio
import os
import stat
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from berth.errors import ConfigError, InvalidArgument, StorageError
from berth.storage import MountEntry, ScratchLost, ScratchManager, check_kernel_id
from berth.storage import scratch as scratch_module

from .fakes import FakeMounter

MiB = 1024 * 1024
UID, GID = (4242, 4343) if os.geteuid() == 0 else (os.getuid(), os.getgid())


def hostdir(tmp_path: Path) -> ScratchManager:
    return ScratchManager(tmp_path / "scratch", "hostdir", 0)


def mounted(tmp_path: Path, kind: str) -> tuple[ScratchManager, FakeMounter]:
    fake = FakeMounter()
    return ScratchManager(tmp_path / "scratch", kind, 16 * MiB, mounter=fake), fake


async def test_create_lays_out_dirs_with_modes_and_owner(tmp_path: Path) -> None:
    paths = await hostdir(tmp_path).create("k1", UID, GID)
    assert paths.kernel_dir == (tmp_path / "scratch" / "k1").resolve()
    modes = {d.name: stat.S_IMODE(d.stat().st_mode)
             for d in (paths.config_dir, paths.ipc_dir, paths.sock_dir, paths.work_dir)}
    assert modes == {"config": 0o755, "ipc": 0o770, "sock": 0o700, "work": 0o755}
    assert (paths.work_dir.stat().st_uid, paths.work_dir.stat().st_gid) == (UID, GID)
    assert (paths.ipc_dir.stat().st_uid, paths.ipc_dir.stat().st_gid) == (UID, GID)
    assert (paths.sock_dir.stat().st_uid, paths.sock_dir.stat().st_gid) == (UID, GID)
    assert paths.config_dir.stat().st_uid == os.geteuid()


async def test_create_again_keeps_files_and_open_adopts(tmp_path: Path) -> None:
    mgr = hostdir(tmp_path)
    paths = await mgr.create("k1", UID, GID)
    (paths.work_dir / "keep.txt").write_text("still here")
    await mgr.create("k1", UID, GID)
    again = await mgr.open("k1")
    assert (again.work_dir / "keep.txt").read_text() == "still here"


async def test_open_refuses_missing_or_incomplete(tmp_path: Path) -> None:
    mgr = hostdir(tmp_path)
    with pytest.raises(StorageError):
        await mgr.open("nope")
    paths = await mgr.create("k1", None, None)
    paths.work_dir.rmdir()
    with pytest.raises(StorageError, match="incomplete"):
        await mgr.open("k1")


async def test_remove_is_idempotent_and_scan_lists_remains(tmp_path: Path) -> None:
    mgr = hostdir(tmp_path)
    await mgr.create("k1", None, None)
    await mgr.create("k2", None, None)
    (mgr.root / "k3.img.tmp").write_bytes(b"")  # crash mid-format of another type
    (mgr.root / "not a kernel").mkdir()
    assert mgr.scan() == {"k1", "k2", "k3"}
    await mgr.remove("k1")
    await mgr.remove("k1")
    await mgr.remove("k3")
    assert mgr.scan() == {"k2"}
    assert sorted(os.listdir(mgr.root)) == ["k2", "not a kernel"]


async def test_remove_does_not_follow_symlinks_out(tmp_path: Path) -> None:
    mgr = hostdir(tmp_path)
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "precious").write_text("x")
    paths = await mgr.create("k1", None, None)
    (paths.work_dir / "link").symlink_to(outside)
    await mgr.remove("k1")
    assert (outside / "precious").read_text() == "x"


async def test_hostdir_usage_counts_allocated_bytes(tmp_path: Path) -> None:
    mgr = hostdir(tmp_path)
    paths = await mgr.create("k1", None, None)
    (paths.work_dir / "f").write_bytes(os.urandom(256 * 1024))
    used, quota = await mgr.usage("k1")
    assert used >= 256 * 1024 and quota == 0


def test_size_rules_are_config_errors(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as e:
        ScratchManager(tmp_path, "hostdir", MiB)
    assert e.value.key_path == "container.scratch-size"
    with pytest.raises(ConfigError):
        ScratchManager(tmp_path, "memory", 0)
    with pytest.raises(ConfigError) as e2:
        ScratchManager(tmp_path, "nfs", 0)
    assert e2.value.key_path == "container.scratch-type"


@pytest.mark.parametrize("bad", ["", ".", "..", "../x", "a/b", "k.img", "k.img.tmp", "-x",
                                 "a" * 200, "k\x00"])
def test_kernel_ids_that_are_not_one_safe_name_are_refused(bad: str) -> None:
    with pytest.raises(InvalidArgument):
        check_kernel_id(bad)


async def test_hostfile_formats_under_tmp_name_then_mounts(tmp_path: Path) -> None:
    mgr, fake = mounted(tmp_path, "hostfile")
    paths = await mgr.create("k1", None, None)
    assert paths.image == mgr.root / "k1.img"
    assert paths.image.stat().st_size == 16 * MiB
    assert paths.image.stat().st_blocks < 64  # sparse
    assert fake.calls[:2] == [("mkfs_ext4", str(mgr.root / "k1.img.tmp")),
                              ("mount_loop", str(paths.kernel_dir))]
    assert mgr.is_mounted("k1")
    await mgr.create("k1", None, None)  # intact: no second mkfs or mount
    assert [c[0] for c in fake.calls].count("mkfs_ext4") == 1


async def test_hostfile_crash_during_mkfs_leaves_only_tmp_which_remove_cleans(
        tmp_path: Path) -> None:
    mgr, fake = mounted(tmp_path, "hostfile")
    fake.fail = {"mkfs_ext4"}
    with pytest.raises(StorageError):
        await mgr.create("k1", None, None)
    assert os.listdir(mgr.root) == ["k1.img.tmp"]
    assert mgr.scan() == {"k1"}
    await mgr.remove("k1")
    assert os.listdir(mgr.root) == []


async def test_hostfile_crash_after_mount_before_dirs_is_completed_or_removed(
        tmp_path: Path) -> None:
    mgr, fake = mounted(tmp_path, "hostfile")
    paths = await mgr.create("k1", None, None)
    for d in (paths.ipc_dir, paths.sock_dir, paths.config_dir, paths.work_dir):
        d.rmdir()  # as if the agent died right after mounting
    with pytest.raises(StorageError):
        await mgr.open("k1")
    await mgr.create("k1", None, None)
    assert (await mgr.open("k1")).work_dir.is_dir()
    await mgr.remove("k1")
    assert fake.table == [] and fake.loops == {} and os.listdir(mgr.root) == []


async def test_hostfile_reboot_remounts_image(tmp_path: Path) -> None:
    mgr, fake = mounted(tmp_path, "hostfile")
    await mgr.create("k1", None, None)
    fake.table.clear()  # reboot: mounts and loop devices gone, image and dir remain
    fake.loops.clear()
    assert not mgr.is_mounted("k1")
    await mgr.ensure_mounted("k1")
    assert mgr.is_mounted("k1")


async def test_memory_scratch_lost_after_reboot_is_reported(tmp_path: Path) -> None:
    mgr, fake = mounted(tmp_path, "memory")
    await mgr.create("k1", None, None)
    fake.table.clear()
    with pytest.raises(ScratchLost):
        await mgr.open("k1")
    await mgr.remove("k1")
    assert mgr.scan() == set()


async def test_remove_falls_back_to_lazy_umount_and_detaches_leftover_loops(
        tmp_path: Path) -> None:
    mgr, fake = mounted(tmp_path, "hostfile")
    paths = await mgr.create("k1", None, None)
    fake.busy.add(paths.kernel_dir)
    fake.loops["/dev/loop7"] = mgr.root / "k1.img"  # attached but never mounted
    await mgr.remove("k1")
    names = [c[0] for c in fake.calls]
    assert "umount_lazy" in names and ("detach_loop", "/dev/loop7") in fake.calls
    assert fake.table == [] and fake.loops == {} and os.listdir(mgr.root) == []


async def test_remove_refuses_to_delete_while_still_mounted(tmp_path: Path) -> None:
    mgr, fake = mounted(tmp_path, "memory")
    paths = await mgr.create("k1", None, None)
    (paths.work_dir / "f").write_text("x")
    fake.busy.add(paths.kernel_dir)
    fake.fail = {"umount_lazy"}
    with pytest.raises(StorageError):
        await mgr.remove("k1")
    assert (paths.work_dir / "f").read_text() == "x"


async def test_scan_sees_mounts_without_dirs(tmp_path: Path) -> None:
    mgr, fake = mounted(tmp_path, "memory")
    mgr.root.mkdir(parents=True)
    fake.table.append(MountEntry(mgr.root / "ghost" / "work", "tmpfs", "tmpfs"))
    assert mgr.scan() == {"ghost"}


async def test_take_over_renames_a_pool_scratch_to_the_kernel_keeping_its_files(
        tmp_path: Path) -> None:
    kernels = hostdir(tmp_path)
    pool = ScratchManager(tmp_path / "scratch" / ".warm-pool", "hostdir", 0)
    made = await pool.create("w1", UID, GID)
    (made.work_dir / "kept").write_text("x")
    paths = await kernels.take_over(pool, "w1", "k1")
    assert paths == kernels.paths("k1")
    assert (paths.work_dir / "kept").read_text() == "x"
    assert not made.kernel_dir.exists()
    assert kernels.scan() == {"k1"}  # the pool's root is no kernel
    with pytest.raises(StorageError):
        await kernels.take_over(pool, "w1", "k1")  # never over an existing scratch


async def test_a_cancelled_create_returns_only_once_its_thread_is_done(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # A deadline or a destroy cancels a create while its thread lays out the directories. The
    # thread runs on regardless; had the create returned first, the rollback's removal would
    # race it (rmtree while directories appear: a leaked scratch dir).
    make_layout = scratch_module._make_layout
    started, finished = threading.Event(), threading.Event()

    def slow_layout(*args: Any) -> None:
        started.set()
        time.sleep(0.2)
        make_layout(*args)
        finished.set()
    monkeypatch.setattr(scratch_module, "_make_layout", slow_layout)
    mgr = hostdir(tmp_path)
    create = asyncio.ensure_future(mgr.create("k1", UID, GID))
    while not started.is_set():
        await asyncio.sleep(0.01)
    create.cancel()
    with pytest.raises(asyncio.CancelledError):
        await create
    assert finished.is_set()
    await mgr.remove("k1")
    assert not (tmp_path / "scratch" / "k1").exists()
