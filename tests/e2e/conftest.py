"""The e2e tier: the whole system, with Berth in place of the Backend.AI agent.

On this machine, each on free loopback ports and stopped by PID or container name:

* PostgreSQL 15 (``support.postgres``), redis-server and etcd (``support.procs``);
* a Backend.AI 26.9.6 manager server from the ``berth/bai-compat:26.9.6`` image
  (``docker run --network host``), its database made by ``backend.ai mgr schema oneshot``,
  ``mgr fixture populate manager-fixture.json`` (a superadmin user in domain/project
  ``default`` and a member of that project in 26.9.6's virtual-entity membership tables, its
  keypair, resource policies, the resource group ``default`` and the ``cpu``/``mem`` slot
  types) and ``mgr image rescan local`` (the Docker daemon's images through a
  ``container_registries`` row of type ``local`` for project ``berth``);
* a real Berth agent process configured as an operator would put it in place of the
  Backend.AI agent (README, "Running Berth in place of the Backend.AI agent"): etcd address
  and namespace, Redis from etcd's ``config/redis``, CurveZMQ keys (its own pair and the
  manager's public key), resource group ``default``, advertised RPC address;
* a stand-in for the resource group's app proxy (``wsproxy_addr``), which the manager asks
  for ``/status`` and ``/v2/conf`` when a user starts a service; it records what the manager
  sends (the kernel's host and port) and answers with a token.

The user is Backend.AI's own client SDK (``scripts/bai.py``), run inside the image against
the manager's REST API. Nothing skips: a missing binary, image or dockerd fails.
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import subprocess
import tempfile
import threading
import time
import urllib.request
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, Self

import pytest
from support.docker import docker, docker_session, image_exists, remove_containers
from support.postgres import PostgresServer
from support.procs import (
    LOOPBACK,
    AgentProcess,
    EtcdServer,
    RedisServer,
    binary,
    free_port,
    port_block,
    tail,
)

from berth.client import AgentClient
from berth.rpc.keys import generate_keypair, load_keypair

IMAGE = "berth/bai-compat:26.9.6"
KERNEL_IMAGE = "berth/python:3.11"
HERE = Path(__file__).resolve().parent
SCRIPTS = HERE / "scripts"
FIXTURE = HERE / "manager-fixture.json"
RUN_LABEL = f"e2e-{uuid.uuid4().hex[:8]}"
MANAGER_START_TIMEOUT = 180.0


# ───────────────────────────────────────────────────────────────── the app proxy stand-in


class AppProxyStandIn:
    """``GET /status`` and ``POST /v2/conf`` of a Backend.AI app proxy coordinator, on a free
    loopback port; every ``/v2/conf`` body the manager posts is kept in :attr:`confs`."""

    def __init__(self) -> None:
        self.confs: list[dict[str, Any]] = []
        stand_in = self

        class Handler(BaseHTTPRequestHandler):
            def _reply(self, body: dict[str, Any]) -> None:
                data = json.dumps(body).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def do_GET(self) -> None:
                if self.path.split("?")[0] == "/status":
                    self._reply({"api_version": "v2", "advertise_address": None})
                else:
                    self.send_error(404)

            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                body = json.loads(self.rfile.read(length) or b"{}")
                if self.path.split("?")[0] == "/v2/conf":
                    stand_in.confs.append(body)
                    self._reply({"token": f"e2e-token-{len(stand_in.confs)}"})
                else:
                    self.send_error(404)

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer((LOOPBACK, 0), Handler)
        self.port = int(self.server.server_address[1])
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    @property
    def addr(self) -> str:
        return f"http://{LOOPBACK}:{self.port}"

    def __enter__(self) -> Self:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.shutdown()
        self.server.server_close()


# ───────────────────────────────────────────────────────────────── the manager


def fixture_data(app_proxy: str) -> dict[str, Any]:
    data: dict[str, Any] = json.loads(FIXTURE.read_text())
    data["scaling_groups"][0]["wsproxy_addr"] = app_proxy
    return data


def user_keypair() -> tuple[str, str]:
    row = json.loads(FIXTURE.read_text())["keypairs"][0]
    return str(row["access_key"]), str(row["secret_key"])


class ManagerServer:
    """``python -m ai.backend.manager.server`` in a container of :data:`IMAGE` named
    ``name`` (label ``berth.test=RUN_LABEL``), on the host network; its files in ``root``
    (mounted at /cfg), the manager key pair in ``keys`` (mounted read-only at /keys), and
    the Docker socket: ``mgr image rescan local`` reads the daemon's images, and the server
    refuses to start without a Docker endpoint (its registry opens a Docker client)."""

    def __init__(self, root: Path, keys: Path, *, pg: PostgresServer, etcd: EtcdServer,
                 namespace: str, app_proxy: str) -> None:
        self.root, self.keys = root, keys
        self.pg, self.etcd, self.namespace, self.app_proxy = pg, etcd, namespace, app_proxy
        self.port, self.internal_port = free_port(), free_port()
        self.name = f"{RUN_LABEL}-manager"
        self.log_path = root / "manager.log"

    @property
    def endpoint(self) -> str:
        return f"http://{LOOPBACK}:{self.port}"

    def toml(self) -> str:
        return f"""\
[db]
type = "postgresql"
name = "{self.pg.dbname}"
user = "postgres"
password = "unused-trust-auth"
[[db.addrs]]
host = "{LOOPBACK}"
port = {self.pg.port}

[etcd]
namespace = "{self.namespace}"
addr = {{ host = "{LOOPBACK}", port = {self.etcd.port} }}

[manager]
id = "{RUN_LABEL}-manager"
num-proc = 1
ipc-base-path = "/tmp/backend.ai/ipc"
service-addr = {{ host = "{LOOPBACK}", port = {self.port} }}
announce-addr = {{ host = "{LOOPBACK}", port = {self.port} }}
internal-addr = {{ host = "{LOOPBACK}", port = {self.internal_port} }}
announce-internal-addr = {{ host = "{LOOPBACK}", port = {self.internal_port} }}
rpc-auth-manager-keypair = "/keys/manager.key_secret"
secret = "e2e-{uuid.uuid4().hex}"
pid-file = "/dev/null"
distributed-lock = "pg_advisory"
aiomonitor-termui-port = {free_port()}
aiomonitor-webui-port = {free_port()}

[logging]
level = "INFO"
drivers = ["console"]
[logging.pkg-ns]
"" = "WARNING"
"ai.backend" = "INFO"

[debug]
enabled = false
"""

    def alembic_ini(self) -> str:
        return f"""\
[alembic]
script_location = ai.backend.manager.models:alembic
sqlalchemy.url = postgresql://postgres:unused@{LOOPBACK}:{self.pg.port}/{self.pg.dbname}
[loggers]
keys = root
[handlers]
keys = console
[formatters]
keys = generic
[logger_root]
level = WARNING
handlers = console
[handler_console]
class = StreamHandler
args = (sys.stderr,)
level = NOTSET
formatter = generic
[formatter_generic]
format = %(levelname)s [%(name)s] %(message)s
"""

    def _docker_run(self, *args: str, detach: bool = False, docker_sock: bool = False
                    ) -> list[str]:
        cmd = ["docker", "run", "--network", "host", "--label", f"berth.test={RUN_LABEL}",
               "-v", f"{self.root}:/cfg", "-v", f"{self.keys}:/keys:ro", "-w", "/cfg"]
        if docker_sock:
            cmd += ["-v", "/var/run/docker.sock:/var/run/docker.sock"]
        cmd += ["-d", "--name", self.name] if detach else ["--rm"]
        return [*cmd, IMAGE, *args]

    def prepare(self) -> None:
        """The database (schema, fixture, images) before the server's first start."""
        (self.root / "manager.toml").write_text(self.toml())
        (self.root / "alembic.ini").write_text(self.alembic_ini())
        (self.root / "fixture.json").write_text(json.dumps(fixture_data(self.app_proxy)))
        cmd = self._docker_run("/opt/bai/bin/python", "/e2e/prepare_db.py",
                               "/cfg/manager.toml", "/cfg/fixture.json", docker_sock=True)
        cmd[2:2] = ["-v", f"{SCRIPTS}:/e2e:ro"]
        done = subprocess.run(cmd, capture_output=True, text=True, timeout=300, check=False)
        (self.root / "prepare.log").write_text(done.stdout + done.stderr)
        if done.returncode != 0 or "Failed to populate" in done.stderr:
            pytest.fail(f"manager database set-up failed ({done.returncode}):\n"
                        f"{done.stderr[-6000:]}")
        images = self.pg.query("SELECT name, status FROM images")
        if ["local/berth/python:3.11", "ALIVE"] not in images:
            pytest.fail(f"mgr image rescan local did not register {KERNEL_IMAGE}: {images}\n"
                        f"{done.stderr[-4000:]}")

    def start(self) -> None:
        docker(*self._docker_run("/opt/bai/bin/python", "-m", "ai.backend.manager.server",
                                 "-f", "/cfg/manager.toml", detach=True,
                                 docker_sock=True)[1:])
        deadline = time.monotonic() + MANAGER_START_TIMEOUT
        while not self._answers():
            if docker("inspect", "-f", "{{.State.Running}}", self.name, check=False) != "true":
                pytest.fail(f"the manager exited:\n{self.logs()}")
            if time.monotonic() > deadline:
                pytest.fail(f"the manager did not answer in {MANAGER_START_TIMEOUT} s:\n"
                            f"{self.logs()}")
            time.sleep(1)

    def _answers(self) -> bool:
        try:
            with urllib.request.urlopen(self.endpoint + "/", timeout=2) as resp:
                return bool(json.loads(resp.read()).get("manager"))
        except (OSError, ValueError):
            return False

    def logs(self, chars: int = 12000) -> str:
        out = subprocess.run(["docker", "logs", self.name], capture_output=True, text=True,
                             check=False)
        text = out.stdout + out.stderr
        self.log_path.write_text(text)
        return text[-chars:]

    def stop(self) -> None:
        """By container name: SIGTERM (a clean shutdown), then removed; its log is kept."""
        docker("stop", "-t", "20", self.name, check=False, timeout=60)
        self.logs()
        docker("rm", "-f", self.name, check=False)


# ───────────────────────────────────────────────────────────────── the agent


class BerthAgent(AgentProcess):
    """``berth start-server`` configured as in the README's "Running Berth in place of the
    Backend.AI agent": CurveZMQ only, etcd for discovery and config (Redis from etcd's
    ``config/redis``), resource group ``default``, advertised RPC address."""

    def __init__(self, root: Path, agent_id: str, *, keys: Path, etcd: EtcdServer,
                 namespace: str) -> None:
        self.keys, self.etcd, self.namespace = keys, etcd, namespace
        self.watcher_port = free_port()
        super().__init__(root, agent_id, port_range=port_block(29000))

    def _toml(self, port_range: tuple[int, int], agent_toml: str, extra_toml: str,
              sync_interval: float | None, container_toml: str = "") -> str:
        low, high = port_range
        return f"""\
[agent]
id = "{self.agent_id}"
scaling-group = "default"
rpc-listen-addr = "{LOOPBACK}:{self.port}"
advertised-rpc-addr = "{LOOPBACK}:{self.port}"
internal-addr = "{LOOPBACK}:{self.internal_port}"
rpc-auth-agent-keypair = "{self.keys / 'agent.key_secret'}"
rpc-auth-manager-public-key = ["{self.keys / 'manager.key'}"]
var-base-path = "var"
ipc-base-path = "ipc"

[container]
bind-host = "{LOOPBACK}"
port-range = [{low}, {high}]
scratch-root = "scratch"

[resource]
reserved-cpu = 0
reserved-mem = "256m"

[etcd]
addr = "{self.etcd.addr}"
namespace = "{self.namespace}"

[watcher]
service-addr = "{LOOPBACK}:{self.watcher_port}"

[logging]
file = "{self.log_path}"
"""

    def client(self, timeout: float = 60) -> AgentClient:
        return AgentClient(self.addr, load_keypair(self.keys / "agent.key_secret").public_key,
                           load_keypair(self.keys / "manager.key_secret"),
                           timeout=timeout, handshake_timeout=2)


# ───────────────────────────────────────────────────────────────── the system


@dataclass
class E2ESystem:
    manager: ManagerServer
    agent: BerthAgent
    pg: PostgresServer
    redis: RedisServer
    app_proxy: AppProxyStandIn
    keys: Path

    @property
    def redis_addr(self) -> str:
        return f"{LOOPBACK}:{self.redis.port}"

    def env(self) -> dict[str, str]:
        access, secret = user_keypair()
        return {"BACKEND_ENDPOINT": self.manager.endpoint, "BACKEND_ACCESS_KEY": access,
                "BACKEND_SECRET_KEY": secret, "BACKEND_ENDPOINT_TYPE": "api"}

    def bai(self, *args: str, timeout: float = 240) -> dict[str, Any]:
        """``scripts/bai.py ARGS`` in a ``--rm`` container of the image (host network):
        the JSON object on its last stdout line. A failure fails the test with the script's
        output and the tails of the manager's and the agent's logs."""
        name = f"{RUN_LABEL}-bai-{uuid.uuid4().hex[:6]}"
        cmd = ["docker", "run", "--rm", "--name", name, "--network", "host",
               "--label", f"berth.test={RUN_LABEL}", "-v", f"{SCRIPTS}:/e2e:ro"]
        for key, value in self.env().items():
            cmd += ["-e", f"{key}={value}"]
        cmd += [IMAGE, "/opt/bai/bin/python", "/e2e/bai.py", *args]
        try:
            proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout,
                                  check=False)
        except subprocess.TimeoutExpired as exc:
            docker("rm", "-f", name, check=False)
            pytest.fail(f"bai.py {args} did not finish within {timeout} s:\n{exc.stderr!r}\n"
                        f"{self.diagnostics()}")
        lines = proc.stdout.strip().splitlines()
        try:
            result = json.loads(lines[-1]) if lines else None
        except json.JSONDecodeError:
            result = None
        if proc.returncode != 0 or not isinstance(result, dict):
            pytest.fail(f"bai.py {args} exited with {proc.returncode}\n--- stderr ---\n"
                        f"{proc.stderr[-6000:]}\n--- stdout ---\n{proc.stdout[-3000:]}\n"
                        f"{self.diagnostics()}")
        return result

    def diagnostics(self) -> str:
        return (f"--- manager log (tail) ---\n{self.manager.logs(8000)}\n"
                f"--- agent log (tail) ---\n{tail(self.agent.log_path, 8000)}")


def etcd_put(etcd: EtcdServer, key: str, value: str) -> None:
    exe = binary("etcdctl", "etcd-client")
    done = subprocess.run([exe, "--endpoints", etcd.addr, "put", key, value],
                          capture_output=True, text=True, check=False,
                          env={**os.environ, "ETCDCTL_API": "3"})
    if done.returncode != 0:
        pytest.fail(f"etcdctl put {key} failed: {done.stderr}")


@pytest.fixture(scope="session")
def e2e_system(tmp_path_factory: pytest.TempPathFactory) -> Iterator[E2ESystem]:
    """The whole system, shared by the tier (it takes a minute or two to start); each test
    destroys what it created."""
    if not image_exists(IMAGE):
        pytest.fail(f"image {IMAGE} is missing: run scripts/setup.sh --test-services")
    root = tmp_path_factory.mktemp("e2e")
    keys = root / "keys"
    keys.mkdir()
    for name in ("agent", "manager"):
        generate_keypair(keys, name)
    namespace = f"e2e{uuid.uuid4().hex[:6]}"
    agent_id = f"i-{RUN_LABEL}"
    # Not under pytest's tmp dirs: those are root's only (0700), and postgres runs as its
    # own user.
    pg_root = Path(tempfile.mkdtemp(prefix=f"berth-{RUN_LABEL}-pg-"))
    pg_root.chmod(0o755)
    gen = docker_session(RUN_LABEL, IMAGE, KERNEL_IMAGE)
    next(gen)
    try:
        with (PostgresServer(pg_root / "postgres") as pg, RedisServer(root / "redis") as redis,
              EtcdServer(root / "etcd", "berth-e2e") as etcd, AppProxyStandIn() as app_proxy):
            # What a Backend.AI install keeps in etcd for every node: where Redis is.
            etcd_put(etcd, f"/sorna/{namespace}/config/redis/addr", f"{LOOPBACK}:{redis.port}")
            manager_root = root / "manager"
            manager_root.mkdir()
            manager = ManagerServer(manager_root, keys, pg=pg, etcd=etcd, namespace=namespace,
                                    app_proxy=app_proxy.addr)
            manager.prepare()
            agent_root = root / "agent"
            agent_root.mkdir()
            agent = BerthAgent(agent_root, agent_id, keys=keys, etcd=etcd, namespace=namespace)
            try:
                agent.spawn()  # it starts (and waits for the manager in etcd) meanwhile
                manager.start()
                asyncio.run(agent.wait_ready(90))
                yield E2ESystem(manager, agent, pg, redis, app_proxy, keys)
            finally:
                try:
                    asyncio.run(agent.shutdown())
                finally:
                    manager.stop()
                    remove_containers(agent_id)
    finally:
        leftover = docker("ps", "-aq", "--filter", f"label=berth.test={RUN_LABEL}",
                          check=False)
        if leftover:
            docker("rm", "-f", *leftover.split(), check=False)
        shutil.rmtree(pg_root, ignore_errors=True)
        for _ in gen:  # the sweep of kernel containers this run's agent left
            pass

