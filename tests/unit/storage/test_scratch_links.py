"""ScratchManager and the scratch walkers against links the kernel's user plants in its scratch."""

from __future__ import annotations

import os
import socket
import stat
from pathlib import Path

import pytest

from berth.errors import StorageError
from berth.stats import scratch_usage
from berth.storage import ScratchManager

UID, GID = 4321, 4322


@pytest.fixture
def host(tmp_path: Path) -> Path:
    d = tmp_path / "host"
    d.mkdir()
    (d / "big").write_bytes(b"x" * (1 << 20))
    return d


def mgr(tmp_path: Path) -> ScratchManager:
    return ScratchManager(tmp_path / "scratch", "hostdir", 0)


async def test_seal_takes_the_socket_dir_from_the_kernel_user_and_unseal_gives_it_back(
        tmp_path: Path) -> None:
    m = mgr(tmp_path)
    paths = await m.create("k1", UID, GID)
    sock = socket.socket(socket.AF_UNIX)
    sock.bind(str(paths.runner_socket))
    os.chown(paths.runner_socket, UID, GID)
    st = m.seal("k1")
    assert st is not None and stat.S_ISSOCK(st.st_mode) and st.st_uid == UID
    d = os.stat(paths.sock_dir)
    assert (d.st_uid, stat.S_IMODE(d.st_mode)) == (os.geteuid(), 0o755)
    m.unseal("k1", UID, GID)
    d = os.stat(paths.sock_dir)
    assert (d.st_uid, d.st_gid, stat.S_IMODE(d.st_mode)) == (UID, GID, 0o700)
    assert not os.path.lexists(paths.runner_socket)
    sock.close()


async def test_seal_refuses_a_socket_dir_replaced_by_a_link(tmp_path: Path, host: Path) -> None:
    m = mgr(tmp_path)
    paths = await m.create("k1", UID, GID)
    paths.sock_dir.rmdir()
    paths.sock_dir.symlink_to(host)
    before = os.stat(host)
    with pytest.raises(OSError):
        m.seal("k1")
    with pytest.raises((OSError, StorageError)):
        m.unseal("k1", UID, GID)
    after = os.stat(host)
    assert (after.st_uid, after.st_mode) == (before.st_uid, before.st_mode)


async def test_create_and_open_refuse_linked_scratch_dirs(tmp_path: Path, host: Path) -> None:
    m = mgr(tmp_path)
    paths = await m.create("k1", UID, GID)
    paths.work_dir.rmdir()
    paths.work_dir.symlink_to(host)
    with pytest.raises(StorageError):
        await m.open("k1")
    with pytest.raises(StorageError):
        await m.create("k1", UID, GID)
    assert os.stat(host).st_uid == os.geteuid()  # never chowned through the link


async def test_remove_deletes_links_not_their_targets(tmp_path: Path, host: Path) -> None:
    m = mgr(tmp_path)
    paths = await m.create("k1", UID, GID)
    (paths.work_dir / "out").symlink_to(host)
    (paths.ipc_dir / "f").symlink_to(host / "big")
    await m.remove("k1")
    assert not paths.kernel_dir.exists()
    assert (host / "big").stat().st_size == 1 << 20


async def test_usage_walks_do_not_follow_links_out(tmp_path: Path, host: Path) -> None:
    m = mgr(tmp_path)
    paths = await m.create("k1", UID, GID)
    (paths.work_dir / "out").symlink_to(host)
    (paths.work_dir / "file").symlink_to(host / "big")
    assert scratch_usage(paths.kernel_dir) < 1 << 20
    assert (await m.usage("k1")).used_bytes < 1 << 20
