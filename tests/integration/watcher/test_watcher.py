"""The watcher as documented — ``berth watcher --token-file F -f agent.toml`` — running the REAL
agent (``berth start-server``) on plain loopback RPC, over real HTTP(S). A kernel created over
RPC keeps running while the watcher stops the agent, and the agent it starts again adopts it."""

from __future__ import annotations

import asyncio
import os
import ssl
import subprocess
import sys
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from support.docker import docker, docker_session, remove_containers
from support.procs import BERTH, AgentProcess, free_port, port_block, stop_process, tail

from berth.watcher import (
    TOKEN_HEADER,
    AgentSupervisor,
    WatcherConfig,
    WatcherServer,
    generate_token_file,
)

RUN_LABEL = f"wtest-{uuid.uuid4().hex[:8]}"
BUSYBOX = "berth/busybox:latest"


@pytest.fixture(scope="module", autouse=True)
def _sweep() -> Iterator[None]:
    yield from docker_session(RUN_LABEL, BUSYBOX)


@dataclass
class Watcher:
    url: str
    token: str
    proc: subprocess.Popen[bytes]
    agent: AgentProcess  # only its config and client: the watcher starts the process
    log_path: Path

    def log(self) -> str:
        return tail(self.log_path) + "\n--- agent log ---\n" + self.agent.log()

    async def get(self, http: aiohttp.ClientSession) -> dict[str, Any]:
        async with http.get(self.url, headers={TOKEN_HEADER: self.token}) as r:
            assert r.status == 200, await r.text()
            body: dict[str, Any] = await r.json()
            return body

    async def post(self, http: aiohttp.ClientSession, path: str) -> dict[str, Any]:
        async with http.post(self.url + path, headers={TOKEN_HEADER: self.token}) as r:
            assert r.status == 200, await r.text()
            body: dict[str, Any] = await r.json()
            return body

    async def agent_ready(self, timeout: float = 90) -> None:
        deadline = time.monotonic() + timeout
        while not await self.agent._ready():
            if self.proc.poll() is not None:
                pytest.fail(f"the watcher exited with {self.proc.returncode}:\n{self.log()}")
            if time.monotonic() > deadline:
                pytest.fail(f"the agent did not become ready in {timeout} s:\n{self.log()}")
            await asyncio.sleep(0.2)


@pytest.fixture
async def watcher(tmp_path: Path) -> AsyncIterator[Watcher]:
    agent = AgentProcess(tmp_path, f"{RUN_LABEL}-{uuid.uuid4().hex[:6]}",
                         port_range=port_block(23000))
    token = generate_token_file(tmp_path / "watcher.token")
    port = free_port()
    log_path = tmp_path / "watcher.log"
    with log_path.open("ab") as log:
        proc = subprocess.Popen(  # noqa: ASYNC220 - a daemon, stopped by PID in the teardown
            [*BERTH, "watcher", "--service-addr", f"127.0.0.1:{port}", "--token-file",
             str(tmp_path / "watcher.token"), "-f", str(agent.config), "--stop-timeout", "30"],
            stdin=subprocess.DEVNULL, stdout=log, stderr=log, cwd=tmp_path,
            start_new_session=True)
    w = Watcher(f"http://127.0.0.1:{port}", token, proc, agent, log_path)
    try:
        await w.agent_ready()
        yield w
    finally:
        try:
            if await w.agent._ready():
                async with agent.client() as c:
                    await c.reset_agent()  # destroys the kernels this test left
        finally:
            stop_process(proc, grace=40)  # the watcher stops its agent on the way out
            left = remove_containers(agent.agent_id)
    assert proc.returncode == 0, w.log()
    assert not left, f"kernel containers left behind: {left}"


def container_state(cid: str) -> tuple[bool, str]:
    running, started = docker("inspect", "-f", "{{.State.Running}} {{.State.StartedAt}}",
                              cid).split()
    return running == "true", started


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


async def test_wrong_or_missing_token_is_refused(watcher: Watcher) -> None:
    async with aiohttp.ClientSession() as http:
        async with http.post(f"{watcher.url}/agent/stop") as r:
            assert r.status == 401
        async with http.post(f"{watcher.url}/agent/stop",
                             headers={TOKEN_HEADER: watcher.token + "x"}) as r:
            assert r.status == 403
        async with http.get(watcher.url, headers={TOKEN_HEADER: "nope"}) as r:
            assert r.status == 403
        status = await watcher.get(http)
    assert status["agent-status"] == "active"  # nothing happened
    assert await watcher.agent._ready()


async def test_real_agent_stopped_and_started_adopts_its_kernel(watcher: Watcher) -> None:
    kid = str(uuid.uuid4())
    async with watcher.agent.client() as c:
        created = await c.create_kernels(kid, [kid], [{
            "image": {"canonical": BUSYBOX, "is_local": True},
            "resource_slots": {"cpu": "0.25", "mem": "96m"}}], {})
    cid = created[0]["container_id"]
    before = container_state(cid)
    assert before[0]
    async with aiohttp.ClientSession() as http:
        status = await watcher.get(http)
        assert status["agent-status"] == "active" and status["watcher-status"] == "active"
        process = status["agent-process"]
        assert process["pid"] == status["agent-pid"] and pid_alive(process["pid"])
        assert process["state"] in ("running", "sleeping", "disk-sleep")
        assert process["rss-bytes"] > 20 << 20  # a real agent, not a stand-in
        assert process["cpu-seconds"] > 0 and process["threads"] >= 1
        assert status["kernels"] == {"running": 1, "stopped": 0, "total": 1}
        second = await watcher.get(http)
        assert isinstance(second["agent-process"]["cpu-percent"], float)

        old_pid = status["agent-pid"]
        stopped = await watcher.post(http, "/agent/stop")
        assert stopped["result"] == "stopped" and stopped["agent-status"] == "inactive"
        assert stopped["agent-pid"] is None and not pid_alive(old_pid)
        assert stopped["agent-exit-code"] == 0  # SIGTERM: a clean shutdown
        assert not await watcher.agent._ready()
        down = await watcher.get(http)
        assert down["agent-process"]["state"] == "absent"
        assert down["kernels"]["running"] == 1  # counted through Docker while the agent is down
        assert container_state(cid) == before  # the kernel ran on, untouched

        started = await watcher.post(http, "/agent/start")
        assert started["result"] == "started" and started["agent-status"] == "active"
        await watcher.agent_ready()
        await _assert_adopted(watcher, kid, cid)

        restarted = await watcher.post(http, "/agent/restart")
        assert restarted["agent-pid"] not in (None, started["agent-pid"])
        await watcher.agent_ready()
        await _assert_adopted(watcher, kid, cid)
    assert container_state(cid) == before
    assert "adopted" in watcher.agent.log()


async def _assert_adopted(watcher: Watcher, kid: str, cid: str) -> None:
    async with watcher.agent.client() as c:
        assert await c.check_running(kid)
        status = await c.get_status()
        [view] = [k for k in status["kernels"] if k["kernel_id"] == kid]
        assert view["state"] == "RUNNING" and view["container_id"] == cid


async def test_tls_when_cert_and_key_given(tmp_path: Path) -> None:
    cert, key = tmp_path / "c.pem", tmp_path / "k.pem"
    await asyncio.to_thread(
        subprocess.run, ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
                         "-subj", "/CN=127.0.0.1", "-addext", "subjectAltName=IP:127.0.0.1",
                         "-keyout", str(key), "-out", str(cert)], check=True, capture_output=True)
    port = free_port()
    sup = AgentSupervisor([sys.executable, "-c", "import time; time.sleep(60)"])
    server = WatcherServer(WatcherConfig("127.0.0.1", port, "tok", cert, key,
                                         autostart=False), sup)
    await server.startup()
    try:
        ctx = ssl.create_default_context(cafile=str(cert))
        async with aiohttp.ClientSession() as http:
            async with http.get(f"https://127.0.0.1:{port}/", ssl=ctx,
                                headers={TOKEN_HEADER: "tok"}) as r:
                body = await r.json()
                assert body["agent-status"] == "inactive"
                assert body["agent-process"] == {"pid": None, "state": "absent"}
            with pytest.raises(aiohttp.ClientError):
                async with http.get(f"http://127.0.0.1:{port}/"):
                    pass
    finally:
        await server.shutdown()
