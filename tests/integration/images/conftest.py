"""A local docker-registry (tmp root, free loopback port) holding a freshly built test image.

The image is ``docker import`` of a static busybox plus two COPY layers of random data (so
the pull has bytes to report), pushed, then removed locally so that a pull must fetch it.
Everything carries ``berth.test=1``; the registry is killed by PID and local tags removed.
"""

from __future__ import annotations

import os
import shutil
import tarfile
import uuid
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from support.docker import docker
from support.procs import RegistryServer

from berth.backend.docker import DockerBackend

BUSYBOX = Path("/bin/busybox")


def build_image(workdir: Path, tag: str) -> None:
    if not BUSYBOX.exists():
        pytest.fail("/bin/busybox missing (apt-get install busybox-static)")
    root = workdir / "root"
    (root / "bin").mkdir(parents=True)
    shutil.copy(BUSYBOX, root / "bin" / "busybox")
    with tarfile.open(workdir / "root.tar", "w") as tar:
        tar.add(root, arcname=".")
    base = f"{tag}-base"
    docker("import", "-c", "LABEL berth.test=1", str(workdir / "root.tar"), base)
    ctx = workdir / "ctx"
    ctx.mkdir()
    for name in ("blob1", "blob2"):
        (ctx / name).write_bytes(os.urandom(6 * 1024 * 1024))
    (ctx / "Dockerfile").write_text(
        f"FROM {base}\nCOPY blob1 /data/blob1\nCOPY blob2 /data/blob2\n"
        'LABEL berth.test=1 ai.backend.kernelspec=1\nCMD ["/bin/busybox", "true"]\n')
    try:
        docker("build", "-q", "-t", tag, str(ctx))
    finally:
        docker("rmi", base)


@dataclass(frozen=True)
class Registry:
    host: str
    image: str  # full reference of the pushed image, absent locally at test start


@pytest.fixture(scope="module")
def registry(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Registry]:
    workdir = tmp_path_factory.mktemp("registry")
    with RegistryServer(workdir) as server:
        ref = f"{server.host}/berth-test/pull-{uuid.uuid4().hex[:8]}:v1"
        try:
            build_image(workdir, ref)
            docker("push", ref)
            docker("rmi", ref)
            yield Registry(server.host, ref)
        finally:
            docker("rmi", "-f", ref, check=False)


@pytest.fixture
async def image_backend() -> AsyncIterator[DockerBackend]:
    """The product's Docker backend, which must satisfy ``berth.images.service.ImageBackend``."""
    backend = DockerBackend()
    try:
        yield backend
    finally:
        await backend.close()
