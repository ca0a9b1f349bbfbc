from __future__ import annotations

from pathlib import Path, PurePosixPath
from typing import Any

import pytest

from berth.errors import MountRefused
from berth.storage import MountPerm, ScratchManager, docker_mounts, intrinsic_mounts, parse_mounts


@pytest.fixture
def roots(tmp_path: Path) -> tuple[Path, Path]:
    allowed = tmp_path / "vfroot"
    (allowed / "data").mkdir(parents=True)
    (allowed / "models").mkdir()
    outside = tmp_path / "outside"
    outside.mkdir()
    return allowed, outside


def mount(host: Path | str, name: str | None = "data", **kw: Any) -> dict[str, Any]:
    return {"name": name, "host_path": str(host), "vfid": "x", "mount_perm": "rw", **kw}


def test_default_kernel_path_and_docker_shape(roots: tuple[Path, Path]) -> None:
    allowed, _ = roots
    [m] = parse_mounts([mount(allowed / "data", mount_perm="ro")], [allowed])
    assert m.kernel_path == PurePosixPath("/home/work/data")
    assert docker_mounts([m]) == [{"Type": "bind", "Source": str((allowed / "data").resolve()),
                                   "Target": "/home/work/data", "ReadOnly": True}]


@pytest.mark.parametrize(("perm", "perm_out", "read_only"), [
    ("ro", MountPerm.RO, True), ("rw", MountPerm.RW, False),
    ("wd", MountPerm.WD, False), ("rw-delete", MountPerm.WD, False)])
def test_permissions(roots: tuple[Path, Path], perm: str, perm_out: MountPerm,
                     read_only: bool) -> None:
    allowed, _ = roots
    [m] = parse_mounts([mount(allowed / "data", mount_perm=perm)], [allowed])
    assert m.perm is perm_out and m.to_docker()["ReadOnly"] is read_only


def test_bad_permission(roots: tuple[Path, Path]) -> None:
    allowed, _ = roots
    with pytest.raises(MountRefused) as e:
        parse_mounts([mount(allowed / "data", mount_perm="rwx")], [allowed])
    assert e.value.field == "mounts[0].mount_perm"


@pytest.mark.parametrize("kernel_path", [
    "/home/work", "/home/config", "/home/config/x", "/opt", "/opt/berth/runner", "/proc",
    "/sys/fs", "/dev", "/etc", "/etc/passwd", "/tmp", "/", "/home", "/usr/lib",
    "/home/work/.ssh", "/home/work/.jupyter", "/home/work/.bashrc", "/home/work/.zshrc/x",
    "/home/work/.bash_profile", "/home/work/../config", "home/work/x", "/home/work/./x",
    "/home//work/x", "/home/work/x/", "//etc", "//home/work/.ssh", "/home/work/x\x00",
])
def test_reserved_or_malformed_kernel_paths_are_refused(
        roots: tuple[Path, Path], kernel_path: str) -> None:
    allowed, _ = roots
    with pytest.raises(MountRefused) as e:
        parse_mounts([mount(allowed / "data", kernel_path=kernel_path)], [allowed])
    assert e.value.field == "mounts[0].kernel_path"


@pytest.mark.parametrize("kernel_path", ["/home/work/data", "/home/work/a/b", "/data",
                                         "/home/work/.local", "/mnt/x"])
def test_allowed_kernel_paths(roots: tuple[Path, Path], kernel_path: str) -> None:
    allowed, _ = roots
    [m] = parse_mounts([mount(allowed / "data", kernel_path=kernel_path)], [allowed])
    assert str(m.kernel_path) == kernel_path


def test_host_path_outside_roots_missing_relative_or_file(roots: tuple[Path, Path]) -> None:
    allowed, outside = roots
    (allowed / "file").write_text("x")
    cases: list[Path | str] = [outside, allowed / "missing", "relative/path", allowed / "file",
             allowed / ".." / "outside", Path(str(allowed) + "-sibling")]
    Path(str(allowed) + "-sibling").mkdir()
    for host in cases:
        with pytest.raises(MountRefused) as e:
            parse_mounts([mount(host)], [allowed])
        assert e.value.field == "mounts[0].host_path", host
    with pytest.raises(MountRefused):
        parse_mounts([mount(allowed / "data")], [])


def test_symlink_inside_allowed_root_pointing_out_is_refused(roots: tuple[Path, Path]) -> None:
    allowed, outside = roots
    (allowed / "sneaky").symlink_to(outside)
    (allowed / "etc").symlink_to("/etc")
    for name in ("sneaky", "etc"):
        with pytest.raises(MountRefused, match="outside the allowed roots"):
            parse_mounts([mount(allowed / name, name=name)], [allowed])


def test_symlinked_allowed_root_is_resolved(roots: tuple[Path, Path], tmp_path: Path) -> None:
    allowed, _ = roots
    link_root = tmp_path / "link-root"
    link_root.symlink_to(allowed)
    [m] = parse_mounts([mount(allowed / "data")], [link_root])
    assert m.host_path == (allowed / "data").resolve()


def test_duplicates_bad_names_and_ordering(roots: tuple[Path, Path]) -> None:
    allowed, _ = roots
    with pytest.raises(MountRefused) as e:
        parse_mounts([mount(allowed / "data"), mount(allowed / "models", name="data")],
                     [allowed])
    assert e.value.field == "mounts[1].kernel_path"
    for bad in ("", "..", "a/b", None):
        with pytest.raises(MountRefused) as e2:
            parse_mounts([mount(allowed / "data", name=bad)], [allowed])
        assert e2.value.field == "mounts[0].name"
    nested = parse_mounts([mount(allowed / "models", name="m", kernel_path="/home/work/d/m"),
                           mount(allowed / "data", name="d")], [allowed])
    assert [str(m.kernel_path) for m in nested] == ["/home/work/d", "/home/work/d/m"]


async def test_intrinsic_mounts(tmp_path: Path) -> None:
    paths = await ScratchManager(tmp_path / "s", "hostdir", 0).create("k1", None, None)
    got = {m["Target"]: (m["Source"], m["ReadOnly"])
           for m in intrinsic_mounts(paths, tmp_path / "runner")}
    assert got == {
        "/home/config": (str(paths.config_dir), True),
        "/home/config/ipc": (str(paths.ipc_dir), False),
        "/home/config/sock": (str(paths.sock_dir), False),
        "/home/work": (str(paths.work_dir), False),
        "/opt/berth/runner": (str(tmp_path / "runner"), True),
    }
