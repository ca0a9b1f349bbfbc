"""Issue 12 item 8 (TLS service ports): with `[service-tls]` the agent serves a kernel's HTTP
service ports over TLS and says so in `get_status` (`tls_host_ports`); the CLI prints those
ports as `https://` URLs (`kernel service start`, `kernel show`), and the URL it prints answers
over TLS."""

from __future__ import annotations

import asyncio
import json
import re
import ssl
import subprocess
import urllib.request
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from support.docker import remove_containers, require_docker_and_images
from support.procs import port_block, wait_until

from .conftest import PYTHON_IMAGE, RUN_LABEL, Agent


@pytest.fixture(scope="module")
def tls_agent(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Agent, Path]]:
    require_docker_and_images(PYTHON_IMAGE)
    root = tmp_path_factory.mktemp("cli-tls-agent")
    cert, key = root / "cert.pem", root / "key.pem"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
                    "-subj", "/CN=localhost", "-addext", "subjectAltName=IP:127.0.0.1",
                    "-keyout", str(key), "-out", str(cert)], check=True, capture_output=True)
    a = Agent(root, f"{RUN_LABEL}-tls-{uuid.uuid4().hex[:6]}",
              port_range=port_block(22000), sync_interval=None,
              extra_toml=f'[service-tls]\ncert = "{cert}"\nkey = "{key}"\n')
    a.spawn()
    try:
        wait_until(a.ready, what="the agent", timeout=60, proc=a.proc, log=a.log, interval=0.3)
        yield a, cert
        for kernel_id in a.kernel_ids():
            a.cli("kernel", "rm", kernel_id)
    finally:
        a.stop()
        left = remove_containers(a.agent_id)
    assert not left, f"kernel containers left behind: {left}"


async def create(agent: Agent, kid: str) -> None:
    config = {"image": {"canonical": PYTHON_IMAGE, "is_local": True},
              "resource_slots": {"cpu": "0.5", "mem": "512m"}}
    async with agent.client() as c:
        await c.create_kernels(kid, [kid], [config], {})


def test_tls_service_ports_are_printed_as_https_and_answer_over_tls(
        tls_agent: tuple[Agent, Path], tmp_path: Path) -> None:
    agent, cert = tls_agent
    kid = str(uuid.uuid4())
    asyncio.run(create(agent, kid))
    page = tmp_path / "page.txt"
    page.write_text("served over tls\n")
    assert agent.cli("kernel", "cp", str(page), f"{kid}:page.txt").returncode == 0

    res = agent.cli("kernel", "service", "start", kid, "http-server")
    assert res.returncode == 0, res.stdout + res.stderr
    match = re.search(r"host port (\d+) -> container port 8080  (\S+)", res.stdout)
    assert match, res.stdout
    port, url = int(match.group(1)), match.group(2)
    assert url == f"https://127.0.0.1:{port}/", res.stdout

    context = ssl.create_default_context(cafile=str(cert))
    body = urllib.request.urlopen(url + "page.txt", context=context, timeout=10).read()
    assert body == b"served over tls\n"

    shown = agent.cli("kernel", "show", kid, "--json")
    assert shown.returncode == 0, shown.stderr
    row = json.loads(shown.stdout)
    assert port in row["tls_host_ports"], row
    assert row["service_urls"]["http-server"] == [url], row
    assert agent.cli("kernel", "rm", kid).returncode == 0
