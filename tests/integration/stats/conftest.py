"""Fixtures for the stats integration tier: a busybox image and labelled test containers.

Nothing here skips: a missing dockerd or prometheus binary fails with a clear message.
"""

from __future__ import annotations

import shutil
import subprocess
import tarfile
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from support.docker import docker, image_exists, require_docker_and_images

SHARED_IMAGE = "berth/busybox:latest"
OWN_IMAGE = "berth-test/busybox:stats"
APPLETS = ("sh", "yes", "ping", "sleep", "dd", "head", "tr", "cat", "rm")


def _build_own_image(tmp: Path) -> None:
    busybox = shutil.which("busybox") or "/bin/busybox"
    if not Path(busybox).exists():
        pytest.fail("no static busybox on this host: apt-get install -y busybox-static")
    tar_path = tmp / "rootfs.tar"
    with tarfile.open(tar_path, "w") as tar:
        tar.add(busybox, arcname="bin/busybox")
        for name in ("tmp", "dev", "proc", "sys"):
            info = tarfile.TarInfo(name)
            info.type, info.mode = tarfile.DIRTYPE, 0o1777
            tar.addfile(info)
        for applet in APPLETS:
            info = tarfile.TarInfo(f"bin/{applet}")
            info.type, info.linkname = tarfile.SYMTYPE, "busybox"
            tar.addfile(info)
    docker("import", "-c", "LABEL berth.test=1", "-c", "ENV PATH=/bin", str(tar_path), OWN_IMAGE)


@pytest.fixture(scope="session")
def busybox_image(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    require_docker_and_images()
    if image_exists(SHARED_IMAGE):
        yield SHARED_IMAGE
        return
    _build_own_image(tmp_path_factory.mktemp("busybox"))
    try:
        yield OWN_IMAGE
    finally:
        docker("rmi", "-f", OWN_IMAGE, check=False)


@dataclass(frozen=True)
class Container:
    id: str
    pid: int


@pytest.fixture
def run_container(busybox_image: str) -> Iterator[Callable[..., Container]]:
    made: list[str] = []

    def run(script: str, *opts: str) -> Container:
        name = f"berth-test-stats-{uuid.uuid4().hex[:8]}"
        cid = docker("run", "-d", "--init", "--label", "berth.test=1", "--name", name, *opts,
                     busybox_image, "sh", "-c", script)
        made.append(cid)
        pid = int(docker("inspect", "-f", "{{.State.Pid}}", cid))
        return Container(cid, pid)

    yield run
    for cid in made:
        docker("rm", "-f", cid, check=False)


@pytest.fixture(scope="session")
def bridge_gateway() -> str:
    """The docker0 address: a host-local address (route `dev lo`), so pings stay on this host."""
    gateway = docker("network", "inspect", "bridge", "-f", "{{(index .IPAM.Config 0).Gateway}}")
    if not gateway:  # dockerd 20.10 leaves Gateway out of IPAM: read docker0's own address
        addr = subprocess.run(["ip", "-4", "-o", "addr", "show", "dev", "docker0"],
                              capture_output=True, text=True, check=False).stdout.split()
        gateway = addr[3].split("/")[0] if len(addr) > 3 else ""
    route = subprocess.run(["ip", "route", "get", gateway], capture_output=True, text=True, check=False)
    if not route.stdout.startswith("local "):
        pytest.fail(f"docker bridge gateway {gateway} is not host-local: {route.stdout!r}")
    return gateway
