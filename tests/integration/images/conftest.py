"""A local docker-registry (tmp root, free loopback port) holding a freshly built test image.

The image is ``docker import`` of a static busybox plus two COPY layers of random data (so
the pull has bytes to report), pushed, then removed locally so that a pull must fetch it.
Everything carries ``berth.test=1``; the registry is killed by PID and local tags removed.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import tarfile
import time
import urllib.request
import uuid
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from berth.backend.docker import DockerBackend

BUSYBOX = Path("/bin/busybox")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def docker_cli(*args: str) -> str:
    res = subprocess.run(["docker", *args], check=False, capture_output=True, text=True,
                         timeout=120)
    if res.returncode != 0:
        raise RuntimeError(f"docker {' '.join(args)} failed: {res.stderr.strip()}")
    return res.stdout.strip()


def start_registry(workdir: Path, port: int) -> subprocess.Popen[bytes]:
    exe = shutil.which("docker-registry")
    if exe is None:
        pytest.fail("docker-registry is not installed (apt-get install docker-registry)")
    cfg = workdir / "config.yml"
    cfg.write_text(f"version: 0.1\nstorage: {{filesystem: {{rootdirectory: {workdir / 'data'}}},"
                   f" delete: {{enabled: true}}}}\nhttp: {{addr: 127.0.0.1:{port}}}\n")
    with open(workdir / "registry.log", "wb") as logf:
        proc = subprocess.Popen([exe, "serve", str(cfg)], stdout=subprocess.DEVNULL,
                                stderr=logf)
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        try:
            urllib.request.urlopen(f"http://127.0.0.1:{port}/v2/", timeout=0.5).close()
            return proc
        except OSError:
            time.sleep(0.05)
    proc.kill()
    pytest.fail(f"docker-registry did not answer on 127.0.0.1:{port}")


def build_image(workdir: Path, tag: str) -> None:
    if not BUSYBOX.exists():
        pytest.fail("/bin/busybox missing (apt-get install busybox-static)")
    root = workdir / "root"
    (root / "bin").mkdir(parents=True)
    shutil.copy(BUSYBOX, root / "bin" / "busybox")
    with tarfile.open(workdir / "root.tar", "w") as tar:
        tar.add(root, arcname=".")
    base = f"{tag}-base"
    docker_cli("import", "-c", "LABEL berth.test=1", str(workdir / "root.tar"), base)
    ctx = workdir / "ctx"
    ctx.mkdir()
    for name in ("blob1", "blob2"):
        (ctx / name).write_bytes(os.urandom(6 * 1024 * 1024))
    (ctx / "Dockerfile").write_text(
        f"FROM {base}\nCOPY blob1 /data/blob1\nCOPY blob2 /data/blob2\n"
        'LABEL berth.test=1 ai.backend.kernelspec=1\nCMD ["/bin/busybox", "true"]\n')
    try:
        docker_cli("build", "-q", "-t", tag, str(ctx))
    finally:
        docker_cli("rmi", base)


@dataclass(frozen=True)
class Registry:
    host: str
    image: str  # full reference of the pushed image, absent locally at test start


@pytest.fixture(scope="module")
def registry(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Registry]:
    workdir = tmp_path_factory.mktemp("registry")
    port = free_port()
    proc = start_registry(workdir, port)
    host = f"127.0.0.1:{port}"
    ref = f"{host}/berth-test/pull-{uuid.uuid4().hex[:8]}:v1"
    try:
        build_image(workdir, ref)
        docker_cli("push", ref)
        docker_cli("rmi", ref)
        yield Registry(host, ref)
    finally:
        subprocess.run(["docker", "rmi", "-f", ref], check=False, capture_output=True)
        proc.kill()
        proc.wait(5)


@pytest.fixture
async def image_backend() -> AsyncIterator[DockerBackend]:
    """The product's Docker backend, which must satisfy ``berth.images.ImageBackend``."""
    backend = DockerBackend()
    try:
        yield backend
    finally:
        await backend.close()
