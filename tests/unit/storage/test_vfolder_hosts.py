"""The volumes config and the legacy vfolder layout, pure."""

from __future__ import annotations

from pathlib import Path

import pytest

from berth.errors import MountRefused
from berth.storage.vfolder_hosts import VFolderHostResolver, VolumesConfig, legacy_host_path


def test_etcd_and_file_spellings_read_the_same() -> None:
    etcd = VolumesConfig.from_config({"_mount": "/mnt", "_fsprefix": "x", "_default_host": "h",
                                      "proxies": {"p": {"manager_api": "http://a",
                                                        "secret": "s", "ssl_verify": "false"}}})
    file = VolumesConfig.from_config({"-mount": "/mnt", "-fsprefix": "x", "-default-host": "h",
                                      "proxies": {"p": {"manager-api": "http://a",
                                                        "secret": "s", "ssl-verify": False}}})
    assert etcd == file
    assert etcd.mount == Path("/mnt") and etcd.proxies["p"].ssl_verify is False


def test_legacy_layout_and_its_guards() -> None:
    assert legacy_host_path(Path("/mnt"), "nfs", "data", "qs/f1", "sub/dir") == Path(
        "/mnt/nfs/data/qs/f1/sub/dir")
    assert legacy_host_path(Path("/mnt"), "nfs", "", "f1") == Path("/mnt/nfs/f1")
    for host, vfid, sub in (("..", "f", "."), ("a/b", "f", "."), ("nfs", "/etc", "."),
                            ("nfs", "../x", "."), ("nfs", "f", "../../x")):
        with pytest.raises(ValueError):
            legacy_host_path(Path("/mnt"), host, "", vfid, sub)


async def test_mounts_with_host_path_are_left_alone_and_unresolvable_refused() -> None:
    resolver = VFolderHostResolver(VolumesConfig())
    config = {"mounts": [{"name": "a", "host_path": "/x"}]}
    assert await resolver.resolve_config(config) == config
    with pytest.raises(MountRefused) as info:
        await resolver.resolve_config({"mounts": [{"name": "a", "host": "nfs", "vfid": "f"}]})
    assert info.value.data["field"] == "mounts[0].host_path"
