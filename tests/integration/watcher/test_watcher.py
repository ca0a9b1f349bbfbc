"""The watcher over real HTTP(S) on loopback, supervising a stand-in agent process, with a
real labelled container standing for a kernel that must survive agent restarts."""

from __future__ import annotations

import asyncio
import io
import socket
import ssl
import subprocess
import sys
import tarfile
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import aiodocker
import aiohttp
import pytest

from berth.watcher import (
    TOKEN_HEADER,
    AgentSupervisor,
    WatcherConfig,
    WatcherServer,
    generate_token_file,
)

AGENT = "import time\nwhile True: time.sleep(0.1)\n"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture
async def kernel_container() -> AsyncIterator[tuple[aiodocker.Docker, str]]:
    """A busybox container labelled berth.test=1 (image imported from /bin/busybox)."""
    if not Path("/bin/busybox").exists():
        pytest.fail("/bin/busybox missing (apt-get install busybox-static)")
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        tar.add("/bin/busybox", arcname="bin/busybox")
    tag = f"berth-test/watcher-{uuid.uuid4().hex[:8]}:latest"
    await asyncio.to_thread(
        subprocess.run, ["docker", "import", "-c", "LABEL berth.test=1", "-", tag],
        input=buf.getvalue(), check=True, capture_output=True)
    docker = aiodocker.Docker()
    container = await docker.containers.create({
        "Image": tag, "Cmd": ["/bin/busybox", "sleep", "300"], "Labels": {"berth.test": "1"},
        "HostConfig": {"Init": True}}, name=f"berth-test-watcher-{uuid.uuid4().hex[:8]}")
    try:
        await container.start()
        yield docker, container.id
    finally:
        await container.delete(force=True)
        await docker.images.delete(tag, force=True)
        await docker.close()


async def started_at(docker: aiodocker.Docker, cid: str) -> tuple[bool, str]:
    info = await docker.containers.get(cid)
    return info["State"]["Running"], info["State"]["StartedAt"]


@pytest.fixture
async def watcher(tmp_path: Path) -> AsyncIterator[tuple[str, str, AgentSupervisor]]:
    token = generate_token_file(tmp_path / "t")
    port = free_port()
    sup = AgentSupervisor([sys.executable, "-c", AGENT], stop_timeout=5)
    server = WatcherServer(WatcherConfig("127.0.0.1", port, token), sup)
    await server.startup()
    try:
        yield f"http://127.0.0.1:{port}", token, sup
    finally:
        await server.shutdown()
    assert not sup.running


async def test_wrong_or_missing_token_is_refused(
        watcher: tuple[str, str, AgentSupervisor]) -> None:
    url, token, sup = watcher
    async with aiohttp.ClientSession() as http:
        async with http.post(f"{url}/agent/stop") as r:
            assert r.status == 401
        async with http.post(f"{url}/agent/stop", headers={TOKEN_HEADER: token + "x"}) as r:
            assert r.status == 403
        async with http.get(url, headers={TOKEN_HEADER: "nope"}) as r:
            assert r.status == 403
    assert sup.running  # nothing happened


async def test_restart_replaces_agent_and_leaves_kernels_running(
        watcher: tuple[str, str, AgentSupervisor],
        kernel_container: tuple[aiodocker.Docker, str]) -> None:
    url, token, _sup = watcher
    docker, cid = kernel_container
    before = await started_at(docker, cid)
    hdr = {TOKEN_HEADER: token}
    async with aiohttp.ClientSession(headers=hdr) as http:
        async with http.get(url) as r:
            status = await r.json()
        assert status["agent-status"] == "active" and status["watcher-status"] == "active"
        old_pid = status["agent-pid"]
        async with http.post(f"{url}/agent/restart") as r:
            body = await r.json()
        assert r.status == 200 and body["result"] == "restarted"
        assert body["agent-pid"] not in (None, old_pid) and body["agent-status"] == "active"
        async with http.post(f"{url}/agent/stop") as r:
            assert (await r.json())["agent-status"] == "inactive"
        async with http.post(f"{url}/hard-reset") as r:
            assert (await r.json())["agent-status"] == "active"
        async with http.post(f"{url}/soft-reset") as r:
            assert (await r.json())["result"] == "signalled"
        await asyncio.sleep(0.2)
        async with http.post(f"{url}/agent/start") as r:
            # the stand-in agent dies on SIGHUP (default action), so start brings it back
            assert (await r.json())["agent-status"] == "active"
    assert await started_at(docker, cid) == before


async def test_tls_when_cert_and_key_given(tmp_path: Path) -> None:
    cert, key = tmp_path / "c.pem", tmp_path / "k.pem"
    await asyncio.to_thread(subprocess.run, ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
                    "-subj", "/CN=127.0.0.1", "-addext", "subjectAltName=IP:127.0.0.1",
                    "-keyout", str(key), "-out", str(cert)], check=True, capture_output=True)
    port = free_port()
    sup = AgentSupervisor([sys.executable, "-c", AGENT])
    server = WatcherServer(WatcherConfig("127.0.0.1", port, "tok", cert, key,
                                         autostart=False), sup)
    await server.startup()
    try:
        ctx = ssl.create_default_context(cafile=str(cert))
        async with aiohttp.ClientSession() as http:
            async with http.get(f"https://127.0.0.1:{port}/", ssl=ctx,
                                headers={TOKEN_HEADER: "tok"}) as r:
                assert (await r.json())["agent-status"] == "inactive"
            with pytest.raises(aiohttp.ClientError):
                async with http.get(f"http://127.0.0.1:{port}/"):
                    pass
    finally:
        await server.shutdown()
