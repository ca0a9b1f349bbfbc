from __future__ import annotations

import io
import json
import os
import tarfile
from pathlib import Path

import pytest

from berth.errors import FileAccessDenied, InvalidArgument, QuotaExceeded
from berth.storage import (
    FileTooLarge,
    KernelFileNotFound,
    KernelFiles,
    list_files_reply,
    locate,
    parse_mounts,
)

UID, GID = (4242, 4343) if os.geteuid() == 0 else (os.getuid(), os.getgid())


def snapshot(root: Path) -> dict[str, tuple[int, int, bytes | str | None]]:
    """Every entry under root with mode, size and content (links: their target)."""
    out: dict[str, tuple[int, int, bytes | str | None]] = {}
    for dirpath, dirnames, filenames in os.walk(root):
        for name in dirnames + filenames:
            p = Path(dirpath) / name
            st = p.lstat()
            content: bytes | str | None = None
            if p.is_symlink():
                content = os.readlink(p)
            elif p.is_file():
                content = p.read_bytes()
            out[str(p.relative_to(root))] = (st.st_mode, st.st_size, content)
    return out


@pytest.fixture
def tree(tmp_path: Path) -> dict[str, Path]:
    work = tmp_path / "work"
    (work / "src").mkdir(parents=True)
    (work / "src" / "main.py").write_text("print(1)\n")
    (work / "hello.txt").write_text("hello")
    secret = tmp_path / "secret"
    secret.mkdir()
    (secret / "key").write_text("TOP SECRET")
    # A stand-in for /etc: if confinement ever broke, a write test must not clobber the
    # host's real /etc/passwd (tests run as root). Real /etc links are probed read-only.
    fake_etc = tmp_path / "etc"
    fake_etc.mkdir()
    (fake_etc / "passwd").write_text("root:x:0:0::/root:/bin/sh\n")
    (work / "to-etc").symlink_to(fake_etc)
    (work / "to-secret").symlink_to(secret)
    (work / "passwd").symlink_to(fake_etc / "passwd")
    (work / "real-etc").symlink_to("/etc")
    (work / "src" / "up").symlink_to("../../secret")
    vroot = tmp_path / "vf"
    (vroot / "data").mkdir(parents=True)
    (vroot / "data" / "d.csv").write_text("a,b\n")
    (vroot / "ro").mkdir()
    return {"work": work, "secret": secret, "vroot": vroot, "root": tmp_path}


def files(tree: dict[str, Path], **kw: object) -> KernelFiles:
    mounts = parse_mounts([
        {"name": "data", "host_path": str(tree["vroot"] / "data"), "mount_perm": "rw"},
        {"name": "ro", "host_path": str(tree["vroot"] / "ro"), "mount_perm": "ro"},
        {"name": "out", "host_path": str(tree["vroot"] / "ro"), "kernel_path": "/data"},
    ], [tree["vroot"]])
    return KernelFiles(tree["work"], mounts=mounts, uid=UID, gid=GID, **kw)  # type: ignore[arg-type]


def test_locate_maps_work_and_longest_mount(tree: dict[str, Path]) -> None:
    f = files(tree)
    assert locate("a/b", tree["work"]).parts == ("a", "b")
    assert f.locate("/home/work/a").base == tree["work"]
    t = f.locate("data/x/y")
    assert (t.base, t.parts, t.read_only) == ((tree["vroot"] / "data").resolve(), ("x", "y"),
                                              False)
    assert f.locate("/home/work/ro").read_only
    assert f.locate("").parts == () and f.locate(".").parts == ()
    assert f.locate("//home/work/x").parts == ("x",)


@pytest.mark.parametrize("bad", ["../../etc/passwd", "..", "a/../../x", "/etc/passwd",
                                 "/home/config/ipc", "/home/workx", "/data/x", "/",
                                 "a\x00b", "//etc/passwd"])
def test_locate_refuses_escapes(tree: dict[str, Path], bad: str) -> None:
    with pytest.raises(FileAccessDenied):
        files(tree).locate(bad)


PROBES = ["to-etc/passwd", "to-etc", "passwd", "to-secret/key", "src/up/key", "../secret/key",
          "/home/work/../secret/key", "/etc/shadow", "data/../../secret/key"]


@pytest.mark.parametrize("path", PROBES)
async def test_reads_refuse_traversal_and_touch_nothing(tree: dict[str, Path], path: str) -> None:
    f, before = files(tree), snapshot(tree["root"])
    for op in (f.download_single, f.download_tar, f.list_files):
        with pytest.raises(FileAccessDenied):
            await op(path)
    assert snapshot(tree["root"]) == before


@pytest.mark.parametrize("path", PROBES + ["to-etc/new", "to-secret/new", "src/up/new",
                                           "to-secret/deeper/new", "ro/new"])
async def test_uploads_refuse_traversal_and_touch_nothing(tree: dict[str, Path],
                                                          path: str) -> None:
    f, before = files(tree), snapshot(tree["root"])
    with pytest.raises(FileAccessDenied):
        await f.upload(path, b"pwned")
    assert snapshot(tree["root"]) == before


@pytest.mark.parametrize("path", ["real-etc/passwd", "real-etc", "real-etc/hostname"])
async def test_reads_through_a_link_to_the_real_etc_are_refused(tree: dict[str, Path],
                                                                path: str) -> None:
    f = files(tree)
    for op in (f.download_single, f.download_tar, f.list_files):
        with pytest.raises(FileAccessDenied):
            await op(path)


async def test_upload_creates_parents_owned_by_kernel_user(tree: dict[str, Path]) -> None:
    f = files(tree)
    await f.upload("new/deep/file.bin", b"\x00\x01")
    await f.upload("/home/work/hello.txt", b"replaced")
    await f.upload("data/sub/out.txt", b"to vfolder")
    work = tree["work"]
    assert (work / "new" / "deep" / "file.bin").read_bytes() == b"\x00\x01"
    assert (work / "hello.txt").read_bytes() == b"replaced"
    assert (tree["vroot"] / "data" / "sub" / "out.txt").read_bytes() == b"to vfolder"
    for p in (work / "new", work / "new" / "deep", work / "new" / "deep" / "file.bin"):
        assert (p.stat().st_uid, p.stat().st_gid) == (UID, GID)
    assert oct((work / "new" / "deep" / "file.bin").stat().st_mode & 0o777) == "0o644"
    assert not [n for n in os.listdir(work) if n.startswith(".berth-upload-")]


async def test_upload_limits_and_directory_targets_touch_nothing(tree: dict[str, Path]) -> None:
    f, before = files(tree, max_upload_bytes=10), snapshot(tree["root"])
    with pytest.raises(FileTooLarge) as e:
        await f.upload("x/y/big", b"x" * 11)
    assert e.value.data["limit"] == 10
    for path in ("src", "", "x/y/../z"):
        with pytest.raises((InvalidArgument, FileAccessDenied)):
            await f.upload(path, b"1")
    with pytest.raises(InvalidArgument):  # parent is a regular file
        await f.upload("hello.txt/child", b"1")
    assert snapshot(tree["root"]) == before


async def test_failed_write_removes_created_dirs(tree: dict[str, Path],
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    f, before = files(tree), snapshot(tree["root"])

    def boom(fd: int, data: object) -> int:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "write", boom)
    with pytest.raises(QuotaExceeded):
        await f.upload("a/b/c.txt", b"data")
    monkeypatch.undo()
    assert snapshot(tree["root"]) == before


async def test_download_single_and_limits(tree: dict[str, Path]) -> None:
    f = files(tree, max_download_bytes=8)
    assert await f.download_single("hello.txt") == b"hello"
    assert await f.download_single("/home/work/data/d.csv") == b"a,b\n"
    with pytest.raises(FileTooLarge):
        await f.download_single("src/main.py")
    with pytest.raises(InvalidArgument):
        await f.download_single("src")
    with pytest.raises(KernelFileNotFound):
        await f.download_single("missing.txt")


async def test_download_tar_of_dir_keeps_links_as_links(tree: dict[str, Path]) -> None:
    data = await files(tree).download_tar("src")
    with tarfile.open(fileobj=io.BytesIO(data)) as tar:
        members = {m.name: m for m in tar.getmembers()}
        assert sorted(members) == ["src", "src/main.py", "src/up"]
        assert members["src/up"].issym() and members["src/up"].linkname == "../../secret"
        main = tar.extractfile("src/main.py")
        assert main is not None and main.read() == b"print(1)\n"
    whole = await files(tree).download_tar("/home/work")
    with tarfile.open(fileobj=io.BytesIO(whole)) as tar:
        names = tar.getnames()
    assert "work/hello.txt" in names and "work/to-secret" in names
    assert not any("key" in n for n in names)


async def test_download_tar_limit(tree: dict[str, Path]) -> None:
    (tree["work"] / "big.bin").write_bytes(os.urandom(64 * 1024))
    with pytest.raises(FileTooLarge):
        await files(tree, max_download_bytes=32 * 1024).download_tar("/home/work")
    assert len(await files(tree, max_download_bytes=32 * 1024).download_tar("src")) <= 32 * 1024


async def test_list_files_shape(tree: dict[str, Path]) -> None:
    entries = await files(tree).list_files("/home/work")
    by_name = {e["filename"]: e for e in entries}
    assert set(by_name) == {"src", "hello.txt", "to-etc", "to-secret", "passwd", "real-etc"}
    assert by_name["hello.txt"]["size"] == 5 and by_name["hello.txt"]["mode"] == "-rw-r--r--"
    assert by_name["to-etc"]["mode"].startswith("l")
    assert by_name["src"]["mode"].startswith("d")
    assert set(by_name["src"]) == {"mode", "size", "ctime", "mtime", "atime", "filename"}
    assert [e["filename"] for e in await files(tree).list_files("data")] == ["d.csv"]
    reply = list_files_reply("/home/work", entries)
    assert json.loads(reply["files"]) == entries and reply["abspath"] == "/home/work"
    with pytest.raises(InvalidArgument):
        await files(tree).list_files("hello.txt")
