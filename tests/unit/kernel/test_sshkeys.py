"""The session keypair (internal_data.ssh_keypair) placed where Backend.AI places it."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from berth.errors import InvalidArgument
from berth.kernel.spec import parse_kernel_spec
from berth.kernel.sshkeys import session_keypair, write_session_keys

PUB = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIFakeKeyForTests berth-test"
PRIV = "-----BEGIN OPENSSH PRIVATE KEY-----\nabc\n-----END OPENSSH PRIVATE KEY-----"


def test_keypair_from_internal_data() -> None:
    assert session_keypair(None) is None
    assert session_keypair({"other": 1}) is None
    assert session_keypair({"ssh_keypair": {"public_key": PUB, "private_key": PRIV}}) == (
        PUB + "\n", PRIV + "\n")
    for bad in ("x", {"public_key": PUB}, {"public_key": "", "private_key": PRIV}):
        with pytest.raises(InvalidArgument):
            session_keypair({"ssh_keypair": bad})


def test_files_modes_and_owner(tmp_path: Path) -> None:
    (tmp_path / "work").mkdir()
    uid, gid = os.getuid(), os.getgid()
    assert write_session_keys(tmp_path, ("work",), (PUB + "\n", PRIV + "\n"), uid=uid, gid=gid)
    ssh = tmp_path / "work" / ".ssh"
    assert stat.S_IMODE(ssh.stat().st_mode) == 0o700
    assert (ssh / "authorized_keys").read_text() == PUB + "\n"
    assert (ssh / "id_rsa").read_text() == PRIV + "\n"
    assert (tmp_path / "work" / "id_container").read_text() == PRIV + "\n"
    for f in (ssh / "authorized_keys", ssh / "id_rsa", tmp_path / "work" / "id_container"):
        assert stat.S_IMODE(f.stat().st_mode) == 0o600
        assert (f.stat().st_uid, f.stat().st_gid) == (uid, gid)


def test_a_link_in_the_way_is_not_followed(tmp_path: Path) -> None:
    (tmp_path / "work").mkdir()
    outside = tmp_path / "outside"
    outside.mkdir()
    (tmp_path / "work" / ".ssh").symlink_to(outside)
    with pytest.raises(OSError):
        write_session_keys(tmp_path, ("work",), (PUB, PRIV), uid=os.getuid(), gid=os.getgid())
    assert list(outside.iterdir()) == []


def test_a_mounted_ssh_folder_wins(tmp_path: Path) -> None:
    (tmp_path / "work").mkdir()
    assert not write_session_keys(tmp_path, ("work",), (PUB, PRIV), uid=os.getuid(),
                                  gid=os.getgid(), mount_paths=["/home/work/.ssh/"])
    assert not (tmp_path / "work" / ".ssh").exists()


def test_private_key_never_dumped() -> None:
    spec = parse_kernel_spec({
        "image": {"canonical": "berth/python-notebook:3.11"},
        "resource_slots": {"cpu": 1, "mem": "1g"},
        "internal_data": {"ssh_keypair": {"public_key": PUB, "private_key": PRIV}, "x": 1}})
    assert spec.internal_data is not None and "ssh_keypair" in spec.internal_data
    dumped = spec.model_dump(mode="json")
    assert dumped["internal_data"] == {"x": 1}
    assert PRIV not in spec.model_dump_json()
