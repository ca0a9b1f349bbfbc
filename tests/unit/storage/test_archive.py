"""extract_archive: a tar from a kernel is unpacked only when every member stays inside the
destination, and placed by `docker cp`'s rules."""

from __future__ import annotations

import io
import tarfile
from pathlib import Path

import pytest

from berth.errors import FileAccessDenied
from berth.storage import UnsafeArchiveMember, extract_archive


def tar_of(*members: tuple[tarfile.TarInfo, bytes]) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        for info, data in members:
            info.size = len(data) if info.isfile() else 0
            tar.addfile(info, io.BytesIO(data) if info.isfile() else None)
    return buf.getvalue()


def member(name: str, kind: bytes = tarfile.REGTYPE, link: str = "") -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.type, info.linkname = kind, link
    return info


EVIL = {
    "dotdot": [member("../escaped.txt")],
    "absolute": [member("/tmp/berth-absolute-escape.txt")],
    "symlink-out": [member("d", tarfile.DIRTYPE), member("d/l", tarfile.SYMTYPE, "../../x")],
    "symlink-abs": [member("l", tarfile.SYMTYPE, "/etc")],
    "hardlink-out": [member("h", tarfile.LNKTYPE, "../outside")],
    "device": [member("dev", tarfile.CHRTYPE)],
    "dotdot-inside-name": [member("x/../../y")],
}


@pytest.mark.parametrize("case", sorted(EVIL))
def test_an_escaping_member_is_refused_before_anything_is_written(tmp_path: Path,
                                                                   case: str) -> None:
    dest = tmp_path / "dest"
    dest.mkdir()
    data = tar_of((member("ok.txt"), b"fine"), *[(m, b"evil") for m in EVIL[case]])
    with pytest.raises(UnsafeArchiveMember) as refused:
        extract_archive(data, dest)
    assert isinstance(refused.value, FileAccessDenied)  # one error tree: exit code 1 in the CLI
    assert "refused archive member" in str(refused.value)
    assert list(dest.iterdir()) == [] and not (tmp_path / "escaped.txt").exists()


def test_links_that_stay_inside_are_kept(tmp_path: Path) -> None:
    data = tar_of((member("top", tarfile.DIRTYPE), b""), (member("top/f"), b"x"),
                  (member("top/l", tarfile.SYMTYPE, "f"), b""),
                  (member("top/h", tarfile.LNKTYPE, "top/f"), b""))
    assert sorted(extract_archive(data, tmp_path)) == ["top", "top/f", "top/h", "top/l"]
    assert (tmp_path / "top" / "l").read_text() == "x"
    assert (tmp_path / "top" / "h").read_text() == "x"


def test_an_existing_directory_receives_the_entry_under_its_own_name(tmp_path: Path) -> None:
    data = tar_of((member("src", tarfile.DIRTYPE), b""), (member("src/a.txt"), b"A"))
    assert sorted(extract_archive(data, tmp_path)) == ["src", "src/a.txt"]
    assert (tmp_path / "src" / "a.txt").read_text() == "A"


def test_any_other_destination_is_the_entry_itself_renamed(tmp_path: Path) -> None:
    one_file = tar_of((member("notes.txt"), b"N"))
    assert extract_archive(one_file, tmp_path / "copy.txt") == ["copy.txt"]
    assert (tmp_path / "copy.txt").read_text() == "N"
    tree = tar_of((member("src", tarfile.DIRTYPE), b""), (member("src/a.txt"), b"A"),
                  (member("src/h", tarfile.LNKTYPE, "src/a.txt"), b""))
    assert sorted(extract_archive(tree, tmp_path / "fresh")) == ["fresh", "fresh/a.txt",
                                                                 "fresh/h"]
    assert (tmp_path / "fresh" / "h").read_text() == "A"  # the hard link follows the rename



def test_a_destination_written_as_a_directory_is_made_and_receives_the_entry(
        tmp_path: Path) -> None:
    one_file = tar_of((member("notes.txt"), b"N"))
    assert extract_archive(one_file, tmp_path / "newdir", into_dir=True) == ["notes.txt"]
    assert (tmp_path / "newdir" / "notes.txt").read_text() == "N"
