"""The compat tier: the real Backend.AI 26.9.6 manager code is the judge.

A real Berth agent process (CurveZMQ keys, Redis and etcd of its own, all on free loopback
ports, stopped by PID) is driven by the manager's own client code, which runs inside the
``berth/bai-compat:26.9.6`` image (built by ``scripts/setup.sh --test-services``; Backend.AI
26.9.6 needs Python 3.13, which the host has not). A test calls :func:`run_in_image` with a
script from ``tests/compat/scripts/``; the script gets the node's addresses and key paths
from ``BERTH_*`` environment variables (see :meth:`CompatNode.script_env`) and prints its
result as JSON on its last stdout line.

Nothing skips: a missing image, binary or dockerd fails with a clear message.
"""

from __future__ import annotations

import asyncio
import json
import subprocess
import uuid
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from support.docker import docker, docker_session, image_exists, remove_containers
from support.procs import LOOPBACK, AgentProcess, EtcdServer, RedisServer, port_block

from berth.client import AgentClient
from berth.rpc.keys import KeyPair, generate_keypair, load_keypair

__all__ = ["IMAGE", "CompatNode", "RunInImage", "curve_agent", "run_script"]

IMAGE = "berth/bai-compat:26.9.6"
SCRIPTS = Path(__file__).resolve().parent / "scripts"
RUN_LABEL = f"compat-{uuid.uuid4().hex[:8]}"
# Where run_script mounts the scripts and the key directory inside the container.
SCRIPTS_MOUNT, KEYS_MOUNT = "/compat", "/keys"
KEY_NAMES = ("agent", "manager", "intruder")


class CurveAgentProcess(AgentProcess):
    """An agent that serves only CurveZMQ: its own key pair, and the manager's public key as
    the one client it accepts; readiness and shutdown go through Berth's client with the
    manager's key pair."""

    def __init__(self, root: Path, agent_id: str, keys: Path, **kw: Any) -> None:
        self.keys = keys
        super().__init__(root, agent_id, **kw)

    def client(self, timeout: float = 60) -> AgentClient:
        return AgentClient(self.addr, load_keypair(self.keys / "agent.key_secret").public_key,
                           load_keypair(self.keys / "manager.key_secret"),
                           timeout=timeout, handshake_timeout=2)


@dataclass(frozen=True)
class CompatNode:
    """One Berth node as a manager sees it: the agent, its Redis and etcd, and the key files
    (``agent``, ``manager`` and ``intruder`` pairs, ``NAME.key`` / ``NAME.key_secret``)."""

    agent: CurveAgentProcess
    redis: RedisServer
    etcd: EtcdServer
    namespace: str
    keys: Path

    def key(self, name: str) -> KeyPair:
        return load_keypair(self.keys / f"{name}.key_secret")

    def script_env(self) -> dict[str, str]:
        """What a script in the image needs to reach this node (paths as mounted there)."""
        return {
            "BERTH_AGENT_ID": self.agent.agent_id,
            "BERTH_AGENT_ADDR": self.agent.addr,  # tcp://127.0.0.1:PORT (host network)
            "BERTH_AGENT_PUBLIC_KEY": f"{KEYS_MOUNT}/agent.key",
            "BERTH_MANAGER_KEYPAIR": f"{KEYS_MOUNT}/manager.key_secret",
            "BERTH_INTRUDER_KEYPAIR": f"{KEYS_MOUNT}/intruder.key_secret",
            "BERTH_REDIS_ADDR": f"{LOOPBACK}:{self.redis.port}",
            "BERTH_REDIS_DB": str(self.redis.db),
            "BERTH_ETCD_ADDR": self.etcd.addr,
            "BERTH_ETCD_NAMESPACE": self.namespace,
        }


def run_script(script: str, *args: str, env: Mapping[str, str], keys: Path,
               timeout: float = 90) -> dict[str, Any]:
    """Run ``tests/compat/scripts/SCRIPT ARGS`` with the image's Python (Backend.AI's venv)
    in a ``--rm`` container on the host network, the scripts and ``keys`` mounted read-only;
    return the JSON object on the script's last stdout line. A non-zero exit, a timeout or a
    last line that is no JSON object fails the test with the script's output."""
    path = SCRIPTS / script
    if not path.is_file():
        pytest.fail(f"no compat script {path}")
    name = f"{RUN_LABEL}-{uuid.uuid4().hex[:6]}"
    cmd = ["docker", "run", "--rm", "--name", name, "--network", "host",
           "--label", f"berth.test={RUN_LABEL}",
           "-v", f"{SCRIPTS}:{SCRIPTS_MOUNT}:ro", "-v", f"{keys}:{KEYS_MOUNT}:ro"]
    for key, value in env.items():
        cmd += ["-e", f"{key}={value}"]
    cmd += [IMAGE, "/opt/bai/bin/python", f"{SCRIPTS_MOUNT}/{script}", *args]
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, check=False)
    except subprocess.TimeoutExpired as exc:
        docker("rm", "-f", name, check=False)
        pytest.fail(f"{script} did not finish within {timeout} s:\n{exc.stderr or ''}")
    out = proc.stdout.strip().splitlines()
    report = f"--- stderr ---\n{proc.stderr[-8000:]}\n--- stdout ---\n{proc.stdout[-4000:]}"
    if proc.returncode != 0:
        pytest.fail(f"{script} exited with {proc.returncode}\n{report}")
    try:
        result = json.loads(out[-1]) if out else None
    except json.JSONDecodeError:
        result = None
    if not isinstance(result, dict):
        pytest.fail(f"{script} printed no JSON object on its last stdout line\n{report}")
    return result


RunInImage = Callable[..., dict[str, Any]]


def curve_agent(root: Path, agent_id: str, keys: Path, redis: RedisServer, etcd: EtcdServer,
                namespace: str, *, port_base: int, extra_toml: str = "") -> CurveAgentProcess:
    """An agent (not started) that serves CurveZMQ only, with ``keys``' agent pair and the
    manager's public key, on ``redis`` and ``etcd`` (``skip-manager-detection``: no manager
    registers in that etcd); ``extra_toml`` adds tables."""
    root.mkdir()
    return CurveAgentProcess(
        root, agent_id, keys, port_range=port_block(port_base),
        agent_toml=(f'rpc-auth-agent-keypair = "{keys / "agent.key_secret"}"\n'
                    f'rpc-auth-manager-public-key = ["{keys / "manager.key"}"]\n'
                    "skip-manager-detection = true\n"),
        extra_toml=(f'[redis]\naddr = "{LOOPBACK}:{redis.port}"\ndb = {redis.db}\n'
                    f'[etcd]\naddr = "{etcd.addr}"\nnamespace = "{namespace}"\n' + extra_toml),
    )


# ───────────────────────────────────────────────────────────────── fixtures


@pytest.fixture(scope="session", autouse=True)
def compat_image() -> Iterator[str]:
    """The image must exist (fail, never skip); afterwards no container of this run is left."""
    if not image_exists(IMAGE):
        pytest.fail(f"image {IMAGE} is missing: run scripts/setup.sh --test-services")
    yield from docker_session(RUN_LABEL, IMAGE)
    leftover = docker("ps", "-aq", "--filter", f"label=berth.test={RUN_LABEL}", check=False)
    if leftover:
        docker("rm", "-f", *leftover.split(), check=False)
        pytest.fail(f"compat scripts left containers behind: {leftover.split()}")


@pytest.fixture(scope="session")
def compat_keys(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """``agent``, ``manager`` and ``intruder`` key pairs, written by Berth's key generator
    (the ZeroMQ certificate files Backend.AI's ``load_certificate`` reads too)."""
    keys = tmp_path_factory.mktemp("compat-keys")
    for name in KEY_NAMES:
        generate_keypair(keys, name)
    return keys


@pytest.fixture(scope="session")
def compat_node(tmp_path_factory: pytest.TempPathFactory, compat_keys: Path
                ) -> Iterator[CompatNode]:
    """A real ``berth start-server`` on CurveZMQ only, with its own redis-server and etcd.

    Shared by the tier (the agent takes seconds to start); tests that change the node's state
    must undo it. ``skip-manager-detection``: no manager registers in this etcd.
    """
    root = tmp_path_factory.mktemp("compat-node")
    namespace = f"compat{uuid.uuid4().hex[:6]}"
    with RedisServer(root / "redis") as redis, EtcdServer(root / "etcd", "berth-compat") as etcd:
        agent = curve_agent(root / "agent", f"{RUN_LABEL}-{uuid.uuid4().hex[:6]}", compat_keys,
                            redis, etcd, namespace, port_base=27000)
        try:
            asyncio.run(agent.start())
            yield CompatNode(agent, redis, etcd, namespace, compat_keys)
        finally:
            try:
                asyncio.run(agent.shutdown())
            finally:
                remove_containers(agent.agent_id)


@pytest.fixture
def run_in_image(compat_node: CompatNode) -> RunInImage:
    """``run_in_image(script, *args, env=None, timeout=90) -> dict``: :func:`run_script`
    with the node's ``BERTH_*`` variables (``env`` adds to or overrides them) and keys; a
    failure also shows the end of the agent's log."""

    def run(script: str, *args: str, env: Mapping[str, str] | None = None,
            timeout: float = 90) -> dict[str, Any]:
        try:
            return run_script(script, *args, env={**compat_node.script_env(), **(env or {})},
                              keys=compat_node.keys, timeout=timeout)
        except pytest.fail.Exception as exc:
            pytest.fail(f"{exc}\n--- agent log ---\n{compat_node.agent.log()[-3000:]}")

    return run
