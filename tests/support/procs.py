"""Real processes for the integration tier, each on free loopback ports under a tmp dir and
stopped by PID: redis-server, etcd, Prometheus, docker-registry and ``berth start-server``.

A missing binary, a process that exits or one that does not answer in time fails the test
with a clear message (never a skip); a server that fails to start is killed before that.
"""

from __future__ import annotations

import asyncio
import os
import random
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator
from pathlib import Path
from types import TracebackType
from typing import Self

import pytest

from berth.client import AgentClient

LOOPBACK = "127.0.0.1"
BERTH = (sys.executable, "-c", "from berth.cli.main import main; main()")


# Listening ports for test servers come from below the kernel's ephemeral range
# (net.ipv4.ip_local_port_range, 32768-60999 here) and below every kernel port block the
# tiers use (from 20000): a port the kernel hands out for ``bind(0)`` can come back on the
# next call, and an outgoing connection can take one between the pick and the server's
# bind. Picking outside that range, and never twice in one process, leaves neither race.
_FREE_PORTS = range(10000, 20000)
_handed_out: set[int] = set()


def free_port() -> int:
    """A loopback TCP port nobody listens on right now and that this process has not handed
    out before, so two calls never return the same port."""
    rng = random.Random(os.getpid() ^ time.monotonic_ns())
    for _ in range(200):
        port = rng.choice(_FREE_PORTS)
        if port in _handed_out:
            continue
        with socket.socket() as s:
            try:
                s.bind((LOOPBACK, port))
            except OSError:
                continue
        _handed_out.add(port)
        return port
    raise RuntimeError(f"no free loopback port in {_FREE_PORTS} after 200 tries")


def port_block(base: int, width: int = 40, slots: int = 20) -> tuple[int, int]:
    """``width`` host ports for kernels from ``base``, shifted by this process's pid so that
    concurrent test runs (and tiers with other bases) do not share them.

    Every tier's base lies in 20000-31999 and spans ``slots`` x 50 = 1000 ports: below the
    kernel's ephemeral range (32768-60999), where an outgoing connection's local port would make
    Docker's proxy fail to bind a kernel's port, and above :func:`free_port`'s 10000-19999.
    """
    assert width <= 50 and 20000 <= base and base + slots * 50 <= 32000, (base, width, slots)
    low = base + (os.getpid() % slots) * 50
    return low, low + width - 1


def binary(name: str, package: str) -> str:
    """Path of executable ``name``; fails the test naming the Debian package when missing."""
    exe = shutil.which(name)
    if exe is None:
        pytest.fail(f"{name} is not installed (apt-get install -y {package})")
    return exe


def stop_process(proc: subprocess.Popen[bytes], grace: float = 20) -> None:
    """SIGTERM, then SIGKILL after ``grace`` seconds; returns once it is reaped."""
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(grace)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def wait_until(ready: Callable[[], bool], *, what: str, timeout: float,
               proc: subprocess.Popen[bytes] | None = None,
               log: Callable[[], str] = lambda: "", interval: float = 0.1) -> None:
    """Poll ``ready`` until true; fail when ``proc`` exits or after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        if proc is not None and proc.poll() is not None:
            pytest.fail(f"{what} exited with {proc.returncode}:\n{log()}")
        if ready():
            return
        if time.monotonic() > deadline:
            pytest.fail(f"{what} did not answer within {timeout} s:\n{log()}")
        time.sleep(interval)


def accepts(port: int) -> bool:
    try:
        with socket.create_connection((LOOPBACK, port), timeout=0.2):
            return True
    except OSError:
        return False


def tail(path: Path, chars: int = 6000) -> str:
    return path.read_text(errors="replace")[-chars:] if path.exists() else f"(no {path.name})"


# ───────────────────────────────────────────────────────────────── service processes


class ServerProcess(ABC):
    """One service binary in ``workdir``, its output in ``<name>.log`` there; a context
    manager (start … stop), and ``start()`` again after ``stop()`` for outages."""

    name = ""
    package = ""
    start_timeout = 15.0
    stop_grace = 0.0  # 0: SIGKILL at once (nothing to flush); else SIGTERM, then SIGKILL

    def __init__(self, workdir: Path) -> None:
        self.workdir = workdir
        self.port = free_port()
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def log_path(self) -> Path:
        return self.workdir / f"{self.name}.log"

    @abstractmethod
    def command(self, exe: str) -> list[str]:
        """The command line that starts the server, ``exe`` being its binary."""

    def ready(self) -> bool:
        return accepts(self.port)

    def start(self) -> None:
        exe = binary(self.name, self.package)
        self.workdir.mkdir(parents=True, exist_ok=True)
        with self.log_path.open("ab") as log:
            self.proc = subprocess.Popen(self.command(exe), stdin=subprocess.DEVNULL,
                                         stdout=log, stderr=log)
        try:
            wait_until(self.ready, what=f"{self.name} on {LOOPBACK}:{self.port}",
                       timeout=self.start_timeout, proc=self.proc,
                       log=lambda: tail(self.log_path, 3000))
        except BaseException:
            self.stop()
            raise

    def stop(self) -> None:
        if self.proc is None:
            return
        if self.stop_grace:
            stop_process(self.proc, self.stop_grace)
        else:
            self.proc.kill()
            self.proc.wait(5)
        self.proc = None

    def __enter__(self) -> Self:
        self.start()
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.stop()


class RedisServer(ServerProcess):
    """redis-server without persistence; the port stays the same across ``stop``/``start``."""

    name = package = "redis-server"
    start_timeout = 5.0

    def __init__(self, workdir: Path, db: int = 4, password: str | None = None) -> None:
        super().__init__(workdir)
        self.db = db
        self.password = password

    def command(self, exe: str) -> list[str]:
        auth = ["--requirepass", self.password] if self.password is not None else []
        return [exe, "--bind", LOOPBACK, "--port", str(self.port), "--save", "",
                "--appendonly", "no", "--dir", str(self.workdir), *auth]

    def ready(self) -> bool:
        try:
            with socket.create_connection((LOOPBACK, self.port), timeout=0.2) as s:
                s.sendall(b"PING\r\n")
                return s.recv(16).startswith((b"+PONG", b"-NOAUTH"))
        except OSError:
            return False

    def kill(self) -> None:
        """An outage: the server dies at once (the same as :meth:`stop`)."""
        self.stop()

    @property
    def url(self) -> str:
        return f"redis://{LOOPBACK}:{self.port}/{self.db}"

    @property
    def toml(self) -> str:
        """The agent.toml table that points an agent here."""
        return f'[redis]\naddr = "{LOOPBACK}:{self.port}"\n'


class EtcdServer(ServerProcess):
    """A one-member etcd cluster with its data in ``workdir/etcd-data``."""

    name = "etcd"
    package = "etcd-server"

    def __init__(self, workdir: Path, member: str = "berth-test") -> None:
        super().__init__(workdir)
        self.member, self.peer_port = member, free_port()

    def command(self, exe: str) -> list[str]:
        client, peer = f"http://{self.addr}", f"http://{LOOPBACK}:{self.peer_port}"
        return [exe, "--name", self.member, "--data-dir", str(self.workdir / "etcd-data"),
                "--listen-client-urls", client, "--advertise-client-urls", client,
                "--listen-peer-urls", peer, "--initial-advertise-peer-urls", peer,
                "--initial-cluster", f"{self.member}={peer}"]

    @property
    def addr(self) -> str:
        return f"{LOOPBACK}:{self.port}"


# The target label Backend.AI's service discovery gives agents (its queries filter on it).
SERVICE_GROUP = "berth"


class PrometheusServer(ServerProcess):
    """Prometheus scraping ``127.0.0.1:target_port`` every second (job ``berth-agent``,
    target label ``service_group``)."""

    name = package = "prometheus"
    start_timeout = 30.0
    stop_grace = 10.0

    def __init__(self, workdir: Path, target_port: int) -> None:
        super().__init__(workdir)
        self.target_port = target_port

    def command(self, exe: str) -> list[str]:
        config = self.workdir / "prometheus.yml"
        config.write_text(
            "global: {scrape_interval: 1s, evaluation_interval: 1s}\n"
            "scrape_configs:\n  - job_name: berth-agent\n"
            f"    static_configs: [{{targets: ['{LOOPBACK}:{self.target_port}'],"
            f" labels: {{service_group: {SERVICE_GROUP}}}}}]\n")
        return [exe, f"--config.file={config}", f"--storage.tsdb.path={self.workdir / 'data'}",
                f"--web.listen-address={LOOPBACK}:{self.port}"]

    @property
    def url(self) -> str:
        return f"http://{LOOPBACK}:{self.port}"


def prometheus_servers(workdir: Path) -> Iterator[Callable[[int], str]]:
    """Body of a fixture: ``start(target_port)`` → base URL of a new :class:`PrometheusServer`
    (each in its own subdirectory); all stopped afterwards."""
    started: list[PrometheusServer] = []

    def start(target_port: int) -> str:
        server = PrometheusServer(workdir / f"prometheus{len(started)}", target_port)
        server.start()
        started.append(server)
        return server.url

    try:
        yield start
    finally:
        for server in started:
            server.stop()


class RegistryServer(ServerProcess):
    """docker-registry (distribution) with filesystem storage and deletes enabled."""

    name = package = "docker-registry"
    start_timeout = 5.0

    def command(self, exe: str) -> list[str]:
        config = self.workdir / "registry.yml"
        config.write_text(
            f"version: 0.1\nstorage: {{filesystem: {{rootdirectory: {self.workdir / 'data'}}},"
            f" delete: {{enabled: true}}}}\nhttp: {{addr: {self.host}}}\n")
        return [exe, "serve", str(config)]

    def ready(self) -> bool:
        try:
            urllib.request.urlopen(f"http://{self.host}/v2/", timeout=0.5).close()
            return True
        except OSError:
            return False

    @property
    def host(self) -> str:
        return f"{LOOPBACK}:{self.port}"


# ───────────────────────────────────────────────────────────────── the agent


class AgentProcess:
    """``berth start-server -f root/agent.toml`` with plain RPC on a free loopback port.

    ``agent_toml`` lines go into ``[agent]``, ``container_toml`` lines into ``[container]``;
    ``extra_toml`` (more tables) is appended as is;
    ``internal_port`` 0 lets the agent pick its internal port; ``sync_interval`` None leaves
    ``[agent.sync-container-lifecycles]`` at its defaults.
    """

    def __init__(self, root: Path, agent_id: str, *, port_range: tuple[int, int],
                 agent_toml: str = "", extra_toml: str = "", internal_port: int | None = None,
                 sync_interval: float | None = 1.0, container_toml: str = "") -> None:
        self.root, self.agent_id = root, agent_id
        self.port = free_port()
        self.internal_port = free_port() if internal_port is None else internal_port
        self.config = root / "agent.toml"
        self.config.write_text(self._toml(port_range, agent_toml, extra_toml, sync_interval,
                                          container_toml))
        self.proc: subprocess.Popen[bytes] | None = None

    def _toml(self, port_range: tuple[int, int], agent_toml: str, extra_toml: str,
              sync_interval: float | None, container_toml: str = "") -> str:
        sync = ("" if sync_interval is None
                else f"[agent.sync-container-lifecycles]\ninterval = {sync_interval}\n")
        low, high = port_range
        return f"""
[agent]
id = "{self.agent_id}"
rpc-listen-addr = "{LOOPBACK}:{self.port}"
rpc-allow-plain = true
internal-addr = "{LOOPBACK}:{self.internal_port}"
var-base-path = "var"
ipc-base-path = "ipc"
{agent_toml}
{sync}
[container]
scratch-root = "scratch"
port-range = [{low}, {high}]
port-reuse-cooldown-sec = 0
bind-host = "{LOOPBACK}"
{container_toml}
[resource]
reserved-cpu = 0
reserved-mem = "256m"
[logging]
file = "{self.log_path}"
{extra_toml}
"""

    @property
    def addr(self) -> str:
        return f"tcp://{LOOPBACK}:{self.port}"

    @property
    def log_path(self) -> Path:
        return self.root / "agent.log"

    @property
    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def spawn(self) -> None:
        """Start the process without waiting for it (see :meth:`start`)."""
        self.proc = subprocess.Popen([*BERTH, "start-server", "-f", str(self.config)],
                                     stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                     stderr=subprocess.DEVNULL, cwd=self.root)

    async def start(self, timeout: float = 60) -> None:
        """Spawn, then wait until ``get_status`` over RPC says ready."""
        self.spawn()
        await self.wait_ready(timeout)

    async def wait_ready(self, timeout: float = 60) -> None:
        """After :meth:`spawn`: until ``get_status`` over RPC says ready; fails the test when
        the process exits or ``timeout`` passes first."""
        assert self.proc is not None
        deadline = time.monotonic() + timeout
        while not await self._ready():
            if self.proc.poll() is not None:
                pytest.fail(f"the agent exited with {self.proc.returncode}:\n{self.log()}")
            if time.monotonic() > deadline:
                pytest.fail(f"the agent did not become ready in {timeout} s:\n{self.log()}")
            await asyncio.sleep(0.1)

    async def _ready(self) -> bool:
        try:
            async with self.client(timeout=2) as c:
                return bool((await c.get_status()).get("ready"))
        except Exception:  # noqa: BLE001 - not listening yet: any failure means retry
            return False

    def client(self, timeout: float = 60) -> AgentClient:
        return AgentClient(self.addr, timeout=timeout, handshake_timeout=2)

    def kill9(self) -> None:
        assert self.proc is not None
        os.kill(self.proc.pid, signal.SIGKILL)
        self.proc.wait()

    def stop(self, grace: float = 30) -> None:
        """SIGTERM (a graceful shutdown), SIGKILL after ``grace`` seconds."""
        if self.proc is not None:
            stop_process(self.proc, grace)

    async def shutdown(self) -> None:
        """Destroy its kernels over RPC (when it runs), then stop it in any case."""
        try:
            if self.alive:
                async with self.client(timeout=60) as c:
                    await c.reset_agent()
        finally:
            self.stop()

    def log(self) -> str:
        return tail(self.log_path)
