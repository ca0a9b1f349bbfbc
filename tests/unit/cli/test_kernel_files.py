"""`berth kernel cp|ls-files` through the real RPC path, in memory; the tar a download
brings is unpacked by berth.storage.extract_archive (its own tests: tests/unit/storage)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from berth.cli.kernel_files import Location, parse_location

from ..storage.test_archive import EVIL, member, tar_of
from .fakes import ExecAgent, exec_agent, invoke


@pytest.fixture
def agent(tmp_path: Path) -> ExecAgent:
    return exec_agent(tmp_path)


# ------------------------------------------------------------------ cp / ls-files

def test_cp_upload_and_download_round_trip(agent: ExecAgent, tmp_path: Path) -> None:
    src = tmp_path / "src"
    (src / "sub").mkdir(parents=True)
    (src / "a.txt").write_text("A")
    (src / "sub" / "b.bin").write_bytes(bytes(range(256)))
    res = invoke(agent, "kernel", "cp", str(src), "k1:/home/work/")
    assert res.exit_code == 0, res.output
    assert (agent.work / "src" / "sub" / "b.bin").read_bytes() == bytes(range(256))
    res = invoke(agent, "kernel", "cp", str(src / "a.txt"), "k1:renamed.txt")
    assert res.exit_code == 0 and (agent.work / "renamed.txt").read_text() == "A"

    into = tmp_path / "into"
    into.mkdir()
    assert invoke(agent, "kernel", "cp", "k1:/home/work/src", str(into)).exit_code == 0
    assert (into / "src" / "sub" / "b.bin").read_bytes() == bytes(range(256))
    target = tmp_path / "copy.txt"
    assert invoke(agent, "kernel", "cp", "k1:renamed.txt", str(target)).exit_code == 0
    assert target.read_text() == "A"
    fresh = tmp_path / "fresh"
    assert invoke(agent, "kernel", "cp", "k1:src", str(fresh)).exit_code == 0
    assert (fresh / "a.txt").read_text() == "A"
    newdir = tmp_path / "newdir"  # a trailing slash: a directory, made when missing
    assert invoke(agent, "kernel", "cp", "k1:renamed.txt", f"{newdir}/").exit_code == 0
    assert (newdir / "renamed.txt").read_text() == "A"


def test_cp_needs_exactly_one_remote_side(agent: ExecAgent, tmp_path: Path) -> None:
    assert invoke(agent, "kernel", "cp", str(tmp_path), str(tmp_path)).exit_code == 2
    assert invoke(agent, "kernel", "cp", "k1:a", "k1:b").exit_code == 2


@pytest.mark.parametrize("case", sorted(EVIL))
def test_download_refuses_escaping_members_and_writes_nothing(
        agent: ExecAgent, tmp_path: Path, case: str) -> None:
    dest = tmp_path / "dest"
    dest.mkdir()
    agent.tar_override = tar_of((member("ok.txt"), b"fine"), *[(m, b"evil") for m in EVIL[case]])
    res = invoke(agent, "kernel", "cp", "k1:whatever", str(dest))
    assert res.exit_code == 1 and "refused archive member" in res.stderr
    assert list(dest.iterdir()) == []
    assert not (tmp_path / "escaped.txt").exists()
    assert not Path("/tmp/berth-absolute-escape.txt").exists()


def test_ls_files_table_and_json(agent: ExecAgent) -> None:
    (agent.work / "notes.txt").write_text("12345")
    (agent.work / "dir").mkdir()
    res = invoke(agent, "kernel", "ls-files", "k1")
    assert res.exit_code == 0 and "notes.txt" in res.stdout and "drwx" in res.stdout
    rows = json.loads(invoke(agent, "kernel", "ls-files", "k1", "--json").stdout)
    assert {r["filename"]: r["size"] for r in rows}["notes.txt"] == 5
    assert invoke(agent, "kernel", "ls-files", "k1", "/etc").exit_code == 1


def test_parse_location() -> None:
    assert parse_location("k1:/home/work/a") == Location("/home/work/a", "k1")
    assert parse_location("k1:") == Location("/home/work", "k1")
    assert parse_location("./a:b") == Location("./a:b")
    assert parse_location("/x/y:z") == Location("/x/y:z")
    assert parse_location("plain") == Location("plain")
