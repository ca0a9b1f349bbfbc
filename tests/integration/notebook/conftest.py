"""A real agent (service TLS on) and the berth/python-notebook image, for the browser test.

Nothing skips: a missing image, browser, ssh client or dockerd fails with a clear message.
"""

from __future__ import annotations

import subprocess
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
from support.docker import docker_session, remove_containers
from support.procs import AgentProcess, binary, port_block

RUN_LABEL = f"nbtest-{uuid.uuid4().hex[:8]}"
NOTEBOOK = "berth/python-notebook:3.11"
BUSYBOX = "berth/busybox:latest"
# Five service ports and a loopback port behind the TLS proxy for each of the four HTTP
# ones: the notebook kernel takes the whole block, so a second kernel only gets ports that
# a destroyed kernel gave back.
PORTS = 9
PORT_BASE, PORT_SLOTS = 31000, 20


@pytest.fixture(scope="session", autouse=True)
def _docker_and_sweep() -> Iterator[None]:
    yield from docker_session(RUN_LABEL, NOTEBOOK, BUSYBOX)


@pytest.fixture(scope="module")
def tls_pair(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    root = tmp_path_factory.mktemp("service-tls")
    cert, key = root / "cert.pem", root / "key.pem"
    done = subprocess.run(
        [binary("openssl", "openssl"), "req", "-x509", "-newkey", "ec", "-pkeyopt",
         "ec_paramgen_curve:prime256v1", "-nodes", "-days", "1", "-subj", "/CN=localhost",
         "-keyout", str(key), "-out", str(cert), "-addext",
         "subjectAltName=IP:127.0.0.1,DNS:localhost"],
        check=False, capture_output=True, text=True)
    if done.returncode:
        pytest.fail(f"openssl could not make a test certificate: {done.stderr}")
    return cert, key


@pytest.fixture
async def tls_agent(tmp_path: Path, tls_pair: tuple[Path, Path]) -> AsyncIterator[AgentProcess]:
    """One agent with `[service-tls]` and a port range of exactly PORTS ports."""
    cert, key = tls_pair
    root = tmp_path / "agent"
    root.mkdir()
    agent = AgentProcess(root, f"{RUN_LABEL}-{uuid.uuid4().hex[:6]}",
                         port_range=port_block(PORT_BASE, PORTS, slots=PORT_SLOTS),
                         extra_toml=f'[service-tls]\ncert = "{cert}"\nkey = "{key}"\n')
    try:
        await agent.start()
        yield agent
    finally:
        try:
            await agent.shutdown()
        finally:
            remove_containers(agent.agent_id)
