"""storage.nofollow: a link or a swapped entry in a scratch never redirects the agent.

The "host" side of each attack is a file, a directory or a listening socket outside the base;
each test checks that it is neither read, written, removed nor connected to.
"""

from __future__ import annotations

import asyncio
import errno
import os
import socket
import stat
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from berth.errors import InvalidArgument, RunnerUnavailable
from berth.runner import RunnerClient
from berth.storage import nofollow
from berth.storage.nofollow import FileTooLarge


@pytest.fixture
def base(tmp_path: Path) -> Path:
    (tmp_path / "scratch" / "config" / "ipc").mkdir(parents=True)
    return tmp_path / "scratch"


@pytest.fixture
def host(tmp_path: Path) -> Path:
    d = tmp_path / "host"
    d.mkdir()
    (d / "secret").write_text("host secret\n")
    return d


@pytest.fixture
def listener(tmp_path: Path) -> Iterator[socket.socket]:
    """A 'host' socket outside the scratch that must never see a connection."""
    path = str(tmp_path / "host.sock")
    srv = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    srv.bind(path)
    srv.listen(8)
    srv.setblocking(False)
    try:
        yield srv
    finally:
        srv.close()


def never_connected(srv: socket.socket) -> bool:
    try:
        conn, _ = srv.accept()
    except BlockingIOError:
        return True
    conn.close()
    return False


# ---------------------------------------------------------------- reads
def test_read_refuses_a_link_at_the_last_component(base: Path, host: Path) -> None:
    (base / "config" / "ipc" / "x").symlink_to(host / "secret")
    with pytest.raises(OSError) as e:
        nofollow.read_file(base, "config/ipc/x", 1024)
    assert e.value.errno == errno.ELOOP


def test_read_refuses_a_link_at_a_parent_component(base: Path, host: Path) -> None:
    os.rename(base / "config" / "ipc", base / "config" / "ipc.old")
    (base / "config" / "ipc").symlink_to(host)
    with pytest.raises(OSError) as e:
        nofollow.read_file(base, "config/ipc/secret", 1024)
    assert e.value.errno in (errno.ELOOP, errno.ENOTDIR)


def test_read_of_a_fifo_fails_at_once_instead_of_hanging(base: Path) -> None:
    os.mkfifo(base / "config" / "ipc" / "x")
    started = time.monotonic()
    with pytest.raises(InvalidArgument):
        nofollow.read_file(base, "config/ipc/x", 1024)
    assert time.monotonic() - started < 2


def test_read_is_bounded(base: Path) -> None:
    (base / "config" / "big").write_bytes(b"x" * 2048)
    assert nofollow.read_file(base, "config/big", 2048) == b"x" * 2048
    with pytest.raises(FileTooLarge):
        nofollow.read_file(base, "config/big", 2047)


def test_relative_paths_only(base: Path) -> None:
    for bad in ("", "/etc/passwd", "config/../..", "config//x", "./x"):
        with pytest.raises(InvalidArgument):
            nofollow.read_file(base, bad, 10)


# ---------------------------------------------------------------- writes
def test_write_replaces_a_link_and_never_writes_through_it(base: Path, host: Path) -> None:
    (base / "config" / "ipc" / "x").symlink_to(host / "secret")
    nofollow.write_file(base, "config/ipc/x", b"mine\n", mode=0o640)
    assert (host / "secret").read_text() == "host secret\n"
    st = os.lstat(base / "config" / "ipc" / "x")
    assert stat.S_ISREG(st.st_mode) and stat.S_IMODE(st.st_mode) == 0o640
    assert (base / "config" / "ipc" / "x").read_bytes() == b"mine\n"
    assert os.listdir(base / "config" / "ipc") == ["x"]  # no temp file left


def test_write_through_a_linked_parent_is_refused(base: Path, host: Path) -> None:
    os.rename(base / "config" / "ipc", base / "config" / "ipc.old")
    (base / "config" / "ipc").symlink_to(host)
    with pytest.raises(OSError):
        nofollow.write_file(base, "config/ipc/secret", b"mine\n")
    assert sorted(os.listdir(host)) == ["secret"]
    assert (host / "secret").read_text() == "host secret\n"


def test_write_over_a_fifo_replaces_it_without_blocking(base: Path) -> None:
    os.mkfifo(base / "config" / "x")
    nofollow.write_file(base, "config/x", b"data")
    assert stat.S_ISREG(os.lstat(base / "config" / "x").st_mode)


def test_a_failed_write_leaves_no_temp_file(base: Path) -> None:
    (base / "config" / "d").mkdir()
    with pytest.raises(OSError):
        nofollow.write_file(base, "config/d", b"data")  # rename over a directory fails
    assert sorted(os.listdir(base / "config")) == ["d", "ipc"]


def test_write_sets_owner_through_the_descriptor(base: Path) -> None:
    if os.geteuid() != 0:
        pytest.fail("the unit tier runs as root (chown)")
    nofollow.write_file(base, "config/ipc/b.sh", b"echo\n", mode=0o755, uid=4321, gid=4322)
    st = os.lstat(base / "config" / "ipc" / "b.sh")
    assert (st.st_uid, st.st_gid, stat.S_IMODE(st.st_mode)) == (4321, 4322, 0o755)


# ---------------------------------------------------------------- probes and removal
def test_lstat_and_unlink_never_follow(base: Path, host: Path) -> None:
    (base / "config" / "ipc" / "marker").symlink_to(host / "secret")
    st = nofollow.lstat_at(base, "config/ipc/marker")
    assert st is not None and stat.S_ISLNK(st.st_mode)
    assert nofollow.lstat_at(base, "config/ipc/none") is None
    nofollow.unlink_at(base, "config/ipc/marker")
    nofollow.unlink_at(base, "config/ipc/marker")  # missing is fine
    assert (host / "secret").exists()
    os.rename(base / "config" / "ipc", base / "config" / "ipc.old")
    (base / "config" / "ipc").symlink_to(host)
    with pytest.raises(OSError):
        nofollow.unlink_at(base, "config/ipc/secret")
    with pytest.raises(OSError):
        nofollow.lstat_at(base, "config/ipc/secret")
    assert (host / "secret").exists()


# ---------------------------------------------------------------- sockets
def test_open_socket_refuses_a_link_to_a_host_socket(base: Path, tmp_path: Path,
                                                     listener: socket.socket) -> None:
    ipc = base / "config" / "ipc"
    (ipc / "runner.sock").symlink_to(tmp_path / "host.sock")
    (ipc / "file").write_text("")
    dir_fd = os.open(ipc, os.O_PATH | os.O_DIRECTORY)
    try:
        with pytest.raises(OSError) as e:
            nofollow.open_socket(dir_fd, "runner.sock")
        assert e.value.errno == errno.ELOOP
        with pytest.raises(OSError) as e2:
            nofollow.open_socket(dir_fd, "file")
        assert e2.value.errno == errno.ENOTSOCK
    finally:
        os.close(dir_fd)
    assert never_connected(listener)


def test_a_pinned_socket_is_reached_even_when_its_name_is_swapped(
        base: Path, tmp_path: Path, listener: socket.socket) -> None:
    ipc = base / "config" / "ipc"
    real = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    real.bind(str(ipc / "runner.sock"))
    real.listen(1)
    real.settimeout(5)
    dir_fd = os.open(ipc, os.O_PATH | os.O_DIRECTORY)
    try:
        fd = nofollow.open_socket(dir_fd, "runner.sock")
    finally:
        os.close(dir_fd)
    # The swap between the check and the connect:
    os.rename(ipc / "runner.sock", ipc / "moved.sock")
    (ipc / "runner.sock").symlink_to(tmp_path / "host.sock")
    client = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        client.connect(f"/proc/self/fd/{fd}")
        conn, _ = real.accept()
        conn.close()
    finally:
        os.close(fd)
        client.close()
        real.close()
    assert never_connected(listener)


async def test_runner_client_never_connects_through_a_link(
        base: Path, tmp_path: Path, listener: socket.socket) -> None:
    sock_path = base / "config" / "ipc" / "runner.sock"
    sock_path.symlink_to(tmp_path / "host.sock")
    async with RunnerClient(sock_path, connect_timeout=1.0) as client:
        with pytest.raises(RunnerUnavailable, match="symbolic link"):
            await client.execute("r1", "query", "print('hi')", flush_timeout=1.0)
    await asyncio.sleep(0)
    assert never_connected(listener)
