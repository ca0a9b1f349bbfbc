"""Scratch quotas and cleanup with real mounts, loop devices and a real container (root)."""

from __future__ import annotations

import os
import subprocess
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from berth.errors import StorageError
from berth.storage import (
    KernelFiles,
    ScratchManager,
    SystemMounter,
    docker_mounts,
    intrinsic_mounts,
    parse_mounts,
)

MiB = 1024 * 1024
QUOTA = 16 * MiB
IMAGE = "berth/busybox:latest"
UID, GID = 4242, 4343


def sh(cmd: list[str], check: bool = True) -> subprocess.CompletedProcess[str]:
    return subprocess.run(cmd, capture_output=True, text=True, check=check, timeout=60)


def mounts_below(root: Path) -> list[str]:
    with open("/proc/self/mounts") as f:
        return [line.split()[1] for line in f if line.split()[1].startswith(str(root))]


def loops_for(root: Path) -> list[str]:
    return [line for line in sh(["losetup", "-a"]).stdout.splitlines() if str(root) in line]


@pytest.fixture
def root(tmp_path: Path) -> Path:
    if os.geteuid() != 0:
        pytest.fail("storage integration tests need root (mount, losetup, mkfs)")
    return (tmp_path / "scratch").resolve()


@pytest.fixture
async def sweep(root: Path) -> AsyncIterator[None]:
    """Whatever a test leaves, remove it; then insist the machine is clean."""
    yield
    for kind in ("hostfile", "memory"):
        mgr = ScratchManager(root, kind, QUOTA)
        for kid in mgr.scan():
            await mgr.remove(kid)
    assert mounts_below(root) == [] and loops_for(root) == []


def dd(target: Path, mib: int) -> subprocess.CompletedProcess[str]:
    return sh(["dd", "if=/dev/zero", f"of={target}", "bs=1M", f"count={mib}"], check=False)


@pytest.mark.parametrize("kind", ["hostfile", "memory"])
async def test_quota_refuses_oversized_host_write(root: Path, sweep: None, kind: str) -> None:
    mgr = ScratchManager(root, kind, QUOTA)
    paths = await mgr.create("k-quota", UID, GID)
    assert mgr.is_mounted("k-quota") and mounts_below(root) == [str(paths.kernel_dir)]
    res = dd(paths.work_dir / "big", 32)
    assert res.returncode != 0 and "No space left on device" in res.stderr
    assert (paths.work_dir / "big").stat().st_size <= QUOTA
    used, quota = await mgr.usage("k-quota")
    assert quota == QUOTA and used >= QUOTA * 0.8
    await mgr.remove("k-quota")
    assert mounts_below(root) == [] and loops_for(root) == [] and os.listdir(root) == []


async def test_hostfile_uses_one_loop_device_and_remove_releases_it(
        root: Path, sweep: None) -> None:
    mgr = ScratchManager(root, "hostfile", QUOTA)
    paths = await mgr.create("k-loop", UID, GID)
    assert paths.image is not None
    assert len(sh(["losetup", "-j", str(paths.image)]).stdout.splitlines()) == 1
    await mgr.remove("k-loop")
    await mgr.remove("k-loop")
    assert loops_for(root) == [] and mounts_below(root) == [] and not paths.image.exists()


async def test_restart_and_reboot_keep_hostfile_scratch(root: Path, sweep: None) -> None:
    paths = await ScratchManager(root, "hostfile", QUOTA).create("k-keep", UID, GID)
    (paths.work_dir / "notes.txt").write_text("survives")
    restarted = ScratchManager(root, "hostfile", QUOTA)  # a new agent process
    assert restarted.scan() == {"k-keep"}
    await restarted.create("k-keep", UID, GID)
    sh(["umount", str(paths.kernel_dir)])  # host reboot: the mount is gone, the image stays
    assert not restarted.is_mounted("k-keep")
    adopted = await restarted.open("k-keep")
    assert (adopted.work_dir / "notes.txt").read_text() == "survives"


class CrashAfter(SystemMounter):
    """A SystemMounter that 'dies' (raises) right after the named step succeeded."""

    def __init__(self, step: str) -> None:
        super().__init__()
        self.step = step

    async def mkfs_ext4(self, image: Path) -> None:
        await super().mkfs_ext4(image)
        if self.step == "mkfs":
            raise SystemExit("crash after mkfs")

    async def mount_loop(self, image: Path, target: Path) -> None:
        await super().mount_loop(image, target)
        if self.step == "mount":
            raise SystemExit("crash after mount")


@pytest.mark.parametrize("step", ["mkfs", "mount"])
async def test_crash_mid_create_then_remove_cleans_up(root: Path, sweep: None,
                                                      step: str) -> None:
    crashing = ScratchManager(root, "hostfile", QUOTA, mounter=CrashAfter(step))
    with pytest.raises(SystemExit):
        await crashing.create("k-crash", UID, GID)
    fresh = ScratchManager(root, "hostfile", QUOTA)
    assert fresh.scan() == {"k-crash"}
    await fresh.remove("k-crash")
    assert os.listdir(root) == [] and mounts_below(root) == [] and loops_for(root) == []


async def test_leftover_attached_loop_device_is_detached(root: Path, sweep: None) -> None:
    mgr = ScratchManager(root, "hostfile", QUOTA)
    paths = await mgr.create("k-att", UID, GID)
    assert paths.image is not None
    sh(["umount", str(paths.kernel_dir)])
    dev = sh(["losetup", "-f", "--show", str(paths.image)]).stdout.strip()
    assert loops_for(root)
    await mgr.remove("k-att")
    assert loops_for(root) == [], dev


async def test_busy_mount_is_detached_lazily(root: Path, sweep: None,
                                             caplog: pytest.LogCaptureFixture) -> None:
    mgr = ScratchManager(root, "memory", QUOTA)
    paths = await mgr.create("k-busy", UID, GID)
    holder = os.open(paths.work_dir / "held", os.O_CREAT | os.O_WRONLY)  # keeps it busy
    try:
        await mgr.remove("k-busy")
    finally:
        os.close(holder)
    assert "detaching lazily" in caplog.text
    assert mounts_below(root) == [] and not paths.kernel_dir.exists()


async def test_usage_of_unmounted_scratch_is_an_error(root: Path, sweep: None) -> None:
    with pytest.raises(StorageError):
        await ScratchManager(root, "memory", QUOTA).usage("k-none")


@pytest.fixture
def busybox() -> str:
    if sh(["docker", "image", "inspect", IMAGE], check=False).returncode != 0:
        pytest.fail(f"image {IMAGE} is missing: run scripts/setup.sh (it builds the images)")
    return IMAGE


def docker_run(image: str, mounts: list[dict[str, object]], script: str) -> \
        subprocess.CompletedProcess[str]:
    name = f"berth-test-storage-{uuid.uuid4().hex[:8]}"
    args = ["docker", "run", "--rm", "--init", "--name", name, "--label", "berth.test=1",
            "--network", "none", "--user", f"{UID}:{GID}"]
    for m in mounts:
        spec = f"type=bind,src={m['Source']},dst={m['Target']}"
        args += ["--mount", spec + (",readonly" if m["ReadOnly"] else "")]
    try:
        return sh([*args, image, "sh", "-c", script], check=False)
    finally:
        sh(["docker", "rm", "-f", name], check=False)


@pytest.mark.parametrize("kind", ["hostfile", "memory"])
async def test_container_write_past_quota_fails(root: Path, sweep: None, busybox: str,
                                                kind: str, tmp_path: Path) -> None:
    mgr = ScratchManager(root, kind, QUOTA)
    paths = await mgr.create("k-ctr", UID, GID)
    runner = tmp_path / "runner"
    runner.mkdir()
    res = docker_run(busybox, intrinsic_mounts(paths, runner),
                     "echo ok > /home/work/small && "
                     "dd if=/dev/zero of=/home/work/big bs=1M count=32; echo rc=$?; "
                     "touch /home/config/x 2>/dev/null && echo config-writable; "
                     "touch /home/config/ipc/sock-ok && echo ipc-ok")
    assert "No space left on device" in res.stdout + res.stderr, res
    assert "rc=0" not in res.stdout and "config-writable" not in res.stdout
    assert "ipc-ok" in res.stdout
    small = paths.work_dir / "small"
    assert small.read_text() == "ok\n" and (small.stat().st_uid, small.stat().st_gid) == (UID, GID)
    files = KernelFiles(paths.work_dir, uid=UID, gid=GID)
    assert await files.download_single("small") == b"ok\n"


async def test_container_ro_vfolder_refuses_writes(root: Path, sweep: None, busybox: str,
                                                   tmp_path: Path) -> None:
    vroot = tmp_path / "vfolders"
    for name in ("ro", "rw"):
        (vroot / name).mkdir(parents=True)
        os.chown(vroot / name, UID, GID)
    mounts = parse_mounts([
        {"name": "ro", "host_path": str(vroot / "ro"), "mount_perm": "ro"},
        {"name": "rw", "host_path": str(vroot / "rw"), "mount_perm": "wd"},
    ], [vroot])
    paths = await ScratchManager(root, "memory", QUOTA).create("k-vf", UID, GID)
    res = docker_run(busybox, docker_mounts(mounts) + [
        {"Type": "bind", "Source": str(paths.work_dir), "Target": "/home/work",
         "ReadOnly": False}],
        "touch /home/work/ro/x || echo ro-refused; touch /home/work/rw/y && echo rw-ok")
    assert "ro-refused" in res.stdout and "rw-ok" in res.stdout, res
    assert not (vroot / "ro" / "x").exists() and (vroot / "rw" / "y").exists()
