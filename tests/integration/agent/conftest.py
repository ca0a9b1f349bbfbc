"""The whole agent against real services: a real agent process (or an in-process one) in a tmp
root, and redis-server / etcd / prometheus started here on free loopback ports, killed by PID.

Nothing skips: a missing binary, image or dockerd fails with a clear message.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from pathlib import Path
from typing import IO, Any

import pytest

from berth.client import AgentClient

RUN_LABEL = f"agtest-{uuid.uuid4().hex[:8]}"
BUSYBOX = "berth/busybox:latest"
PYTHON = "berth/python:3.11"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def port_block(width: int = 40) -> tuple[int, int]:
    """Host ports for kernels, away from the other tiers' blocks (32000+ and the 30000 default)."""
    base = 42000 + (os.getpid() % 200) * 50
    return base, base + width - 1


def binary(name: str, package: str) -> str:
    exe = shutil.which(name)
    if exe is None:
        pytest.fail(f"{name} is not installed (apt-get install -y {package})")
    return exe


def containers(agent_id: str, kernel_id: str | None = None) -> list[str]:
    filters = ["--filter", f"label=ai.backend.owner={agent_id}"]
    if kernel_id is not None:
        filters += ["--filter", f"label=ai.backend.kernel-id={kernel_id}"]
    out = subprocess.run(["docker", "ps", "-aq", *filters], check=False, capture_output=True, text=True)
    return out.stdout.split()


def remove_containers(agent_id: str) -> None:
    ids = containers(agent_id)
    if ids:
        subprocess.run(["docker", "rm", "-f", *ids], check=False, capture_output=True)


def stop_process(proc: subprocess.Popen[bytes], grace: float = 20) -> None:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(grace)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


@pytest.fixture(scope="session", autouse=True)
def _docker_and_sweep() -> Iterator[None]:
    if subprocess.run(["docker", "info"], check=False, capture_output=True).returncode != 0:
        pytest.fail("the Docker engine does not answer: run scripts/setup.sh first")
    for image in (BUSYBOX, PYTHON):
        if subprocess.run(["docker", "image", "inspect", image], check=False, capture_output=True).returncode:
            pytest.fail(f"image {image} is missing: run scripts/setup.sh first")
    yield
    out = subprocess.run(["docker", "ps", "-a", "--format",
                          '{{.ID}} {{.Label "ai.backend.owner"}}'], check=False, capture_output=True, text=True)
    mine = [line.split()[0] for line in out.stdout.splitlines() if RUN_LABEL in line]
    if mine:
        subprocess.run(["docker", "rm", "-f", *mine], check=False, capture_output=True)
        pytest.fail(f"tests left {len(mine)} kernel container(s) behind")


# ───────────────────────────────────────────────────────────────── the agent process


class AgentProcess:
    """``berth start-server -f agent.toml`` in ``root``: ``agent_toml`` lines go into
    ``[agent]``, ``extra_toml`` (more tables) is appended verbatim."""

    def __init__(self, root: Path, extra_toml: str = "", *, agent_toml: str = "",
                 internal_port: int | None = None) -> None:
        self.root = root
        self.agent_id = f"{RUN_LABEL}-{uuid.uuid4().hex[:6]}"
        self.port = free_port()
        self.internal_port = internal_port or free_port()
        low, high = port_block()
        self.config = root / "agent.toml"
        self.config.write_text(f"""
[agent]
id = "{self.agent_id}"
rpc-listen-addr = "127.0.0.1:{self.port}"
rpc-allow-plain = true
internal-addr = "127.0.0.1:{self.internal_port}"
var-base-path = "var"
ipc-base-path = "ipc"
{agent_toml}
[agent.sync-container-lifecycles]
interval = 1.0
[container]
scratch-root = "scratch"
port-range = [{low}, {high}]
port-reuse-cooldown-sec = 0
bind-host = "127.0.0.1"
[resource]
reserved-cpu = 0
reserved-mem = "256m"
[logging]
file = "{root / 'agent.log'}"
{extra_toml}
""")
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def addr(self) -> str:
        return f"tcp://127.0.0.1:{self.port}"

    def _spawn(self) -> subprocess.Popen[bytes]:
        return subprocess.Popen(
            [sys.executable, "-c", "from berth.cli.main import main; main()",
             "start-server", "-f", str(self.config)],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)

    async def start(self) -> None:
        self.proc = self._spawn()
        for _ in range(300):
            assert self.proc.poll() is None, f"agent exited:\n{self.log()}"
            try:
                async with self.client(timeout=2) as c:
                    if (await c.get_status()).get("ready"):
                        return
            except Exception:  # noqa: BLE001 - not listening yet: any failure means retry
                await asyncio.sleep(0.1)
        raise AssertionError(f"agent did not become ready:\n{self.log()}")

    def client(self, timeout: float = 60) -> AgentClient:
        return AgentClient(self.addr, timeout=timeout, handshake_timeout=2)

    def kill9(self) -> None:
        assert self.proc is not None
        os.kill(self.proc.pid, signal.SIGKILL)
        self.proc.wait()

    def stop(self) -> None:
        if self.proc is not None:
            stop_process(self.proc)

    def log(self) -> str:
        # absolute in agent.toml: [logging] file is not resolved against the file's directory
        path = self.root / "agent.log"
        return path.read_text()[-6000:] if path.exists() else "(no log)"


AgentFactory = Callable[..., Awaitable[AgentProcess]]


@pytest.fixture
async def agent_factory(tmp_path: Path) -> AsyncIterator[AgentFactory]:
    """Start agent processes; each is reset (kernels destroyed), stopped and swept after."""
    made: list[AgentProcess] = []

    async def start(extra_toml: str = "", **kw: Any) -> AgentProcess:
        root = tmp_path / f"agent{len(made)}"
        root.mkdir()
        proc = AgentProcess(root, extra_toml, **kw)
        made.append(proc)
        await proc.start()
        return proc

    yield start
    for proc in made:
        if proc.proc is not None and proc.proc.poll() is None:
            try:
                async with proc.client(timeout=60) as c:
                    await c.reset_agent()
            finally:
                proc.stop()
        remove_containers(proc.agent_id)


# ───────────────────────────────────────────────────────────────── redis-server


class RedisServer:
    """One redis-server on a fixed free port; ``kill()`` and ``start()`` again for outages."""

    def __init__(self, workdir: Path) -> None:
        self.workdir, self.port = workdir, free_port()
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        exe = binary("redis-server", "redis-server")
        self.proc = subprocess.Popen(
            [exe, "--bind", "127.0.0.1", "--port", str(self.port), "--save", "",
             "--appendonly", "no", "--dir", str(self.workdir),
             "--logfile", str(self.workdir / "redis.log")])
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline:
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.2) as s:
                    s.sendall(b"PING\r\n")
                    if s.recv(16).startswith(b"+PONG"):
                        return
            except OSError:
                time.sleep(0.05)
        pytest.fail(f"redis-server did not answer on port {self.port} within 5 s")

    @property
    def toml(self) -> str:
        return f'[redis]\naddr = "127.0.0.1:{self.port}"\n'

    def kill(self) -> None:
        if self.proc is not None:
            self.proc.kill()
            self.proc.wait(5)
            self.proc = None


@pytest.fixture
def redis_server(tmp_path: Path) -> Iterator[RedisServer]:
    server = RedisServer(tmp_path)
    server.start()
    try:
        yield server
    finally:
        server.kill()


# ───────────────────────────────────────────────────────────────── etcd


@pytest.fixture
def etcd_addr(tmp_path: Path) -> Iterator[str]:
    exe = binary("etcd", "etcd-server")
    client, peer = free_port(), free_port()
    curl, purl = f"http://127.0.0.1:{client}", f"http://127.0.0.1:{peer}"
    with open(tmp_path / "etcd.log", "wb") as logf:
        proc = subprocess.Popen(
            [exe, "--name", "berth-agtest", "--data-dir", str(tmp_path / "etcd-data"),
             "--listen-client-urls", curl, "--advertise-client-urls", curl,
             "--listen-peer-urls", purl, "--initial-advertise-peer-urls", purl,
             "--initial-cluster", f"berth-agtest={purl}"], stdout=logf, stderr=logf)
    try:
        deadline = time.monotonic() + 15
        while True:
            try:
                with socket.create_connection(("127.0.0.1", client), timeout=0.2):
                    break
            except OSError:
                if time.monotonic() > deadline or proc.poll() is not None:
                    pytest.fail(f"etcd did not start on {client}: see {tmp_path / 'etcd.log'}")
                time.sleep(0.1)
        yield f"127.0.0.1:{client}"
    finally:
        proc.kill()
        proc.wait(5)


# ───────────────────────────────────────────────────────────────── prometheus


@pytest.fixture
def prometheus(tmp_path: Path) -> Iterator[Callable[[int], str]]:
    """``start(target_port)`` → base URL of a Prometheus scraping 127.0.0.1:target every 1 s."""
    exe = binary("prometheus", "prometheus")
    procs: list[subprocess.Popen[bytes]] = []
    logs: list[IO[bytes]] = []

    def start(target_port: int) -> str:
        port = free_port()
        config = tmp_path / "prometheus.yml"
        config.write_text(
            "global: {scrape_interval: 1s, evaluation_interval: 1s}\n"
            "scrape_configs:\n  - job_name: berth-agent\n"
            f"    static_configs: [{{targets: ['127.0.0.1:{target_port}']}}]\n")
        log = (tmp_path / "prometheus.log").open("wb")
        logs.append(log)
        procs.append(subprocess.Popen(
            [exe, f"--config.file={config}", f"--storage.tsdb.path={tmp_path / 'prom-data'}",
             f"--web.listen-address=127.0.0.1:{port}"], stdout=log, stderr=log))
        return f"http://127.0.0.1:{port}"

    yield start
    for proc in procs:
        stop_process(proc, grace=10)
    for log in logs:
        log.close()


# ───────────────────────────────────────────────────────────────── helpers


def kernel_config(image: str = BUSYBOX, **slots: str) -> dict[str, Any]:
    return {"image": {"canonical": image, "is_local": True},
            "resource_slots": {"cpu": "0.25", "mem": "96m", **slots}}


def docker_exec(container_id: str, *cmd: str) -> str:
    proc = subprocess.run(["docker", "exec", container_id, *cmd], check=False, capture_output=True,
                          text=True, timeout=30)
    assert proc.returncode == 0, proc.stderr
    return proc.stdout


def container_env(container_id: str) -> dict[str, str]:
    out = docker_exec(container_id, "busybox", "env")
    return dict(line.split("=", 1) for line in out.splitlines() if "=" in line)


async def eventually(check: Callable[[], Awaitable[bool]], timeout: float = 10.0,
                     what: str = "condition") -> None:
    deadline = time.monotonic() + timeout
    while not await check():
        if time.monotonic() > deadline:
            raise AssertionError(f"{what} not met within {timeout}s")
        await asyncio.sleep(0.2)
