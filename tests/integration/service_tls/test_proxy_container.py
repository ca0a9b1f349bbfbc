"""A real container's HTTP service, published on loopback, served over TLS by the proxy."""

from __future__ import annotations

import asyncio
import http.client
import ssl
import subprocess
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

from berth.network.service_tls import TLSServiceProxy
from support.procs import free_port

BUSYBOX = "berth/busybox:latest"
PAGE = "hello from the kernel"


def docker(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["docker", *args], check=False, capture_output=True, text=True)


@pytest.fixture(scope="module")
def cert_pair(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    root = tmp_path_factory.mktemp("service-tls")
    cert, key = root / "cert.pem", root / "key.pem"
    done = subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
         "-nodes", "-days", "1", "-subj", "/CN=localhost", "-keyout", str(key), "-out", str(cert),
         "-addext", "subjectAltName=IP:127.0.0.1,DNS:localhost"],
        check=False, capture_output=True, text=True)
    if done.returncode:
        pytest.fail(f"openssl could not make a test certificate: {done.stderr}")
    return cert, key


@pytest.fixture
def httpd_port() -> Iterator[int]:
    """busybox httpd in a labelled container, its 8080 published on 127.0.0.1:<free>."""
    if docker("info").returncode:
        pytest.fail("the Docker engine does not answer: run scripts/setup.sh first")
    if docker("image", "inspect", BUSYBOX).returncode:
        pytest.fail(f"image {BUSYBOX} is missing: run scripts/setup.sh first")
    port, name = free_port(), f"berth-test-tls-{uuid.uuid4().hex[:8]}"
    run = docker("run", "-d", "--init", "--rm", "--name", name, "--label", "berth.test=1",
                 "-p", f"127.0.0.1:{port}:8080", "--entrypoint", "/bin/sh", BUSYBOX, "-c",
                 f"mkdir -p /tmp/x && echo '{PAGE}' > /tmp/x/index.html"
                 " && exec busybox httpd -f -p 8080 -h /tmp/x")
    try:
        if run.returncode:
            pytest.fail(f"docker run failed: {run.stderr}")
        _wait_plain_http(port)
        yield port
    finally:
        docker("rm", "-f", name)


def _wait_plain_http(port: int, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while True:
        try:
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=2)
            conn.request("GET", "/")
            if conn.getresponse().status == 200:
                conn.close()
                return
        except OSError:
            pass
        if time.monotonic() > deadline:
            pytest.fail(f"busybox httpd did not answer on 127.0.0.1:{port}")
        time.sleep(0.2)


@pytest.fixture
async def proxy(cert_pair: tuple[Path, Path]) -> AsyncIterator[TLSServiceProxy]:
    async with TLSServiceProxy.from_files(*cert_pair) as p:
        yield p


def https_get(port: int, cafile: Path) -> tuple[int, str, str]:
    ctx = ssl.create_default_context(cafile=str(cafile))
    conn = http.client.HTTPSConnection("127.0.0.1", port, context=ctx, timeout=10)
    try:
        conn.request("GET", "/index.html")
        version = conn.sock.version() if isinstance(conn.sock, ssl.SSLSocket) else None
        resp = conn.getresponse()  # the server says close: conn lets go of its socket here
        return resp.status, resp.read().decode(), version or ""
    finally:
        conn.close()


async def test_container_http_service_answers_over_tls(
        proxy: TLSServiceProxy, httpd_port: int, cert_pair: tuple[Path, Path]) -> None:
    listen = free_port()
    assert await proxy.add("http-server", "127.0.0.1", listen, "127.0.0.1", httpd_port) == listen
    for _ in range(3):  # busybox httpd closes after each response: a fresh proxied connection
        status, body, version = await asyncio.to_thread(https_get, listen, cert_pair[0])
        assert (status, body.strip()) == (200, PAGE)
        assert version in {"TLSv1.2", "TLSv1.3"}
    untrusted = ssl.create_default_context()  # the system CAs do not know our certificate
    with pytest.raises(ssl.SSLCertVerificationError):
        await asyncio.open_connection("127.0.0.1", listen, ssl=untrusted)
    assert await proxy.remove("http-server")
    with pytest.raises(OSError):
        await asyncio.to_thread(https_get, listen, cert_pair[0])
