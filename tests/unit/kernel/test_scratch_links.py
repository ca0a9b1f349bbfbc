"""The lifecycle and the ledger against links planted in a kernel's scratch: every file the agent
writes, probes or reads there is reached without following a link, and the runner's socket
directory is sealed (root's) whenever a runner kernel is ready or adopted."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from berth.errors import DeadlineExceeded, StorageError
from berth.kernel.ledger import LEDGER_FILENAME

from .harness import PY_IMAGE, Harness, build, new_id


@pytest.fixture
def host(tmp_path: Path) -> Path:
    d = tmp_path / "outside"
    d.mkdir()
    (d / "file").write_text("host file\n")
    return d


def sealed(path: Path) -> bool:
    st = os.stat(path)
    return st.st_uid == os.geteuid() and stat.S_IMODE(st.st_mode) == 0o755


async def test_ledger_never_reads_or_writes_through_a_link(h: Harness, host: Path) -> None:
    kid = await h.create()
    entry = h.ledger.read(kid)
    assert entry is not None
    ledger = h.scratch.paths(kid).config_dir / LEDGER_FILENAME
    (host / "ledger.json").write_bytes(ledger.read_bytes())
    ledger.unlink()
    ledger.symlink_to(host / "ledger.json")
    assert h.ledger.read(kid) is None  # a file outside is never taken for the ledger
    for tmp in ("berth-ledger.tmp", ".berth-tmp-x"):  # a planted temp name is not used either
        (ledger.parent / tmp).symlink_to(host / "file")
    h.ledger.write(entry)  # replaces the link, never writes through it
    assert (host / "file").read_text() == "host file\n"
    assert stat.S_ISREG(os.lstat(ledger).st_mode) and h.ledger.read(kid) == entry
    assert stat.S_IMODE(os.lstat(ledger).st_mode) == 0o600


async def test_ledger_refuses_a_linked_config_dir(h: Harness, host: Path) -> None:
    kid = await h.create()
    entry = h.ledger.read(kid)
    assert entry is not None
    config = h.scratch.paths(kid).config_dir
    os.rename(config, config.with_name("config.old"))
    config.symlink_to(host)
    with pytest.raises(StorageError):
        h.ledger.write(entry)
    assert sorted(os.listdir(host)) == ["file"]
    os.unlink(config)
    os.rename(config.with_name("config.old"), config)


async def test_bootstrap_script_replaces_a_planted_link(h: Harness, host: Path) -> None:
    kid = new_id()
    paths = await h.scratch.create(kid, os.getuid(), os.getgid())
    (paths.work_dir / "bootstrap.sh").symlink_to(host / "file")
    (paths.config_dir / "environ.txt").symlink_to(host / "file")
    await h.create(kid, image=PY_IMAGE, bootstrap_script="echo hi\n",
                   environ={"A": "1"})
    assert (host / "file").read_text() == "host file\n"
    script = paths.work_dir / "bootstrap.sh"
    assert stat.S_ISREG(os.lstat(script).st_mode) and script.read_text() == "echo hi\n"
    assert stat.S_IMODE(os.lstat(script).st_mode) == 0o755
    assert "A=1\n" in (paths.config_dir / "environ.txt").read_text()


async def test_a_linked_bootstrap_marker_does_not_count_as_done(tmp_path: Path,
                                                                host: Path) -> None:
    h = await build(tmp_path, creating_timeout=0.5)
    try:
        kid = new_id()
        paths = await h.scratch.create(kid, os.getuid(), os.getgid())
        (paths.ipc_dir / "bootstrap.exit").symlink_to(host / "file")
        with pytest.raises(DeadlineExceeded):
            await h.create(kid, bootstrap_script="true\n")
        assert (host / "file").read_text() == "host file\n"
    finally:
        await h.lc.close()


async def test_runner_socket_dir_is_sealed_when_ready_and_again_after_a_restart(
        h: Harness) -> None:
    kid = await h.create(image=PY_IMAGE)
    paths = h.scratch.paths(kid)
    assert h.runners.made[-1].socket_path == paths.sock_dir / "runner.sock"
    assert sealed(paths.sock_dir)
    (paths.sock_dir / "runner.sock").write_text("")  # the old container's socket
    await h.lc.restart(kid)
    assert sealed(paths.sock_dir)
    assert not os.path.lexists(paths.sock_dir / "runner.sock")


async def test_adoption_seals_the_socket_dir(tmp_path: Path) -> None:
    first = await build(tmp_path)
    kid = await first.create(image=PY_IMAGE)
    paths = first.scratch.paths(kid)
    await first.lc.close()
    os.chmod(paths.sock_dir, 0o777)  # as left by a crash between bind and seal
    second = await build(tmp_path, first.backend)
    try:
        report = await second.reconciler().at_start()
        assert report.adopted == [kid]
        assert sealed(paths.sock_dir)
        assert second.runners.made[-1].socket_path == paths.sock_dir / "runner.sock"
    finally:
        await second.lc.close()
