"""Shared pieces of the benchmark scripts: timing summaries, output, Docker CLI, a real agent.

Every benchmark measures Berth and its baseline in the same run, interleaved, and reports
ratios (Berth / baseline): absolute timings on a 2-core machine are noisy, ratios less so.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import AsyncIterator, Callable, Coroutine, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psutil

from berth.client import AgentClient
from berth.rpc import KeyPair, generate_keypair, load_keypair

REPO = Path(__file__).resolve().parent.parent
RESULTS = REPO / "benchmarks" / "results"
PYTHON_IMAGE = "berth/python:3.11"
BUSYBOX_IMAGE = "berth/busybox:latest"
TEST_LABEL = "berth.test=1"
BENCH_LABEL = f"berth.bench={uuid.uuid4().hex[:8]}"


# ---------------------------------------------------------------- timing and output
def summary(samples: Sequence[float]) -> dict[str, float]:
    """Median, min, max and count of samples (seconds in, milliseconds out)."""
    ms = [s * 1000 for s in samples]
    return {"median_ms": round(statistics.median(ms), 2), "min_ms": round(min(ms), 2),
            "max_ms": round(max(ms), 2), "n": len(ms)}


def ratio(berth: dict[str, float], base: dict[str, float]) -> float:
    return round(berth["median_ms"] / base["median_ms"], 3)


def parser(description: str, default_runs: int) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=description)
    p.add_argument("--runs", type=int, default=default_runs, help="repetitions per measure")
    p.add_argument("--out", type=Path, default=None,
                   help="JSON result file (default benchmarks/results/<name>.json)")
    return p


def emit(name: str, rows: list[tuple[str, str, str, str]], data: dict[str, Any],
         out: Path | None) -> None:
    """Print a table (measure, berth, baseline, ratio) and write the JSON result."""
    header = ("measure", "berth", "baseline", "ratio")
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(4)]
    line = " | ".join
    print(line(h.ljust(w) for h, w in zip(header, widths, strict=True)))
    print("-+-".join("-" * w for w in widths))
    for row in rows:
        print(line(c.ljust(w) for c, w in zip(row, widths, strict=True)))
    data = {"benchmark": name, "when": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
            "host": {"cpus": os.cpu_count(), "kernel": os.uname().release}, **data}
    path = out or RESULTS / f"{name}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data, indent=2) + "\n")
    print(f"\nJSON: {path}")


def fmt(s: dict[str, float]) -> str:
    return f"{s['median_ms']:.1f} ms"


# ---------------------------------------------------------------- Docker CLI (the baseline)
async def docker(*args: str) -> str:
    proc = await asyncio.create_subprocess_exec(
        "docker", *args, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    out, err = await proc.communicate()
    if proc.returncode != 0:
        raise RuntimeError(f"docker {' '.join(args[:3])} failed ({proc.returncode}): "
                           f"{err.decode().strip()}")
    return out.decode().strip()


async def docker_run(image: str, *cmd: str) -> str:
    """``docker run -d --init`` with the test labels; returns the container id."""
    return await docker("run", "-d", "--init", "--label", TEST_LABEL, "--label", BENCH_LABEL,
                        image, *cmd)


def sweep_containers() -> int:
    """Remove every container this benchmark run labelled (a safety net; normally none)."""
    ids = subprocess.run(["docker", "ps", "-aq", "--filter", f"label={BENCH_LABEL}"],
                         capture_output=True, text=True, check=False).stdout.split()
    if ids:
        subprocess.run(["docker", "rm", "-f", *ids], capture_output=True, check=False)
    return len(ids)


def require_images(*images: str) -> None:
    for image in images:
        probe = subprocess.run(["docker", "image", "inspect", image], capture_output=True,
                               check=False)
        if probe.returncode != 0:
            sys.exit(f"image {image} is missing: run scripts/setup.sh first")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


# ---------------------------------------------------------------- Curve keys
@dataclass(frozen=True)
class Keys:
    agent_pair: Path
    manager_public: Path
    agent: KeyPair
    manager: KeyPair


def make_keys(directory: Path) -> Keys:
    _, agent_secret = generate_keypair(directory, "agent")
    manager_public, manager_secret = generate_keypair(directory, "manager")
    return Keys(agent_secret, manager_public, load_keypair(agent_secret),
                load_keypair(manager_secret))


def load_keys(directory: Path) -> Keys:
    """The key set `make_keys` wrote into `directory`."""
    agent, manager = directory / "agent.key_secret", directory / "manager.key_secret"
    return Keys(agent, directory / "manager.key", load_keypair(agent), load_keypair(manager))


# ---------------------------------------------------------------- a real agent process
@dataclass
class AgentProcess:
    """`berth start-server` in a tmp root, reached over RPC with Curve like a Manager."""

    agent_id: str
    pid: int
    client: AgentClient
    root: Path

    @property
    def process(self) -> psutil.Process:
        return psutil.Process(self.pid)

    def rss_bytes(self) -> int:
        """RSS of the agent process and its children (none expected)."""
        proc = self.process
        return sum(p.memory_info().rss for p in [proc, *proc.children(recursive=True)])

    def cpu_seconds(self) -> float:
        t = self.process.cpu_times()
        return float(t.user + t.system)


def _agent_toml(root: Path, agent_id: str, port: int, keys: Keys, port_base: int) -> str:
    return f"""
[agent]
id = "{agent_id}"
rpc-listen-addr = "127.0.0.1:{port}"
rpc-auth-agent-keypair = "{keys.agent_pair}"
rpc-auth-manager-public-key = ["{keys.manager_public}"]
var-base-path = "{root / 'var'}"
ipc-base-path = "{root / 'ipc'}"

[container]
scratch-root = "{root / 'scratch'}"
port-range = [{port_base}, {port_base + 99}]
port-reuse-cooldown-sec = 0
bind-host = "127.0.0.1"
vfolder-allowed-roots = ["{root / 'vfolders'}"]

[resource]
reserved-cpu = 0
reserved-mem = "256m"

[logging]
level = "INFO"
file = "{root / 'agent.log'}"
"""


@contextlib.asynccontextmanager
async def agent_process(timeout: float = 30.0, extra_toml: str = "",
                        edit_toml: Callable[[str], str] = lambda text: text,
                        command: Sequence[str] | None = None,
                        ) -> AsyncIterator[AgentProcess]:
    """``extra_toml``: more tables appended to the agent's file (e.g. ``[warm-pool]``);
    ``edit_toml`` rewrites the base file first (a key in one of its tables); ``command``
    replaces ``berth`` (a wrapper that takes berth's own arguments)."""
    root = Path(tempfile.mkdtemp(prefix="berth-bench-"))
    (root / "vfolders").mkdir()
    agent_id = f"bench-{uuid.uuid4().hex[:8]}"
    port = free_port()
    keys = make_keys(root / "keys")
    config = root / "agent.toml"
    config.write_text(edit_toml(_agent_toml(root, agent_id, port, keys,
                                            33000 + os.getpid() % 100 * 100)) + extra_toml)
    berth = list(command or [str(Path(sys.executable).parent / "berth")])
    with (root / "stderr.log").open("wb") as stderr:
        proc = await asyncio.create_subprocess_exec(
            *berth, "start-server", "-f", str(config),
            stdout=subprocess.DEVNULL, stderr=stderr)
    client = AgentClient(f"tcp://127.0.0.1:{port}", keys.agent.public_key, keys.manager,
                         agent_id=agent_id, timeout=120.0, handshake_timeout=1.0)
    try:
        await _connect(client, proc, root, timeout)
        try:
            yield AgentProcess(agent_id, proc.pid, client, root)
        finally:
            with contextlib.suppress(Exception):
                await client.reset_agent()
            await client.__aexit__(None, None, None)
    finally:
        await _stop(proc)
        _sweep_agent(agent_id)
        shutil.rmtree(root, ignore_errors=True)


async def _connect(client: AgentClient, proc: asyncio.subprocess.Process, root: Path,
                   timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while True:
        if proc.returncode is not None:
            raise RuntimeError(f"agent exited with {proc.returncode}: "
                               f"{(root / 'stderr.log').read_text()[-2000:]}")
        with contextlib.suppress(Exception):
            await client.__aenter__()
            return
        if time.monotonic() > deadline:
            raise RuntimeError("agent did not answer PING in time")
        await asyncio.sleep(0.2)


async def _stop(proc: asyncio.subprocess.Process) -> None:
    if proc.returncode is None:
        proc.send_signal(signal.SIGTERM)
        try:
            await asyncio.wait_for(proc.wait(), 20)
        except TimeoutError:
            proc.kill()
            await proc.wait()


def _sweep_agent(agent_id: str) -> None:
    ids = subprocess.run(["docker", "ps", "-aq", "--filter", f"label=ai.backend.owner={agent_id}"],
                         capture_output=True, text=True, check=False).stdout.split()
    if ids:
        print(f"warning: removing {len(ids)} kernel container(s) the agent left", file=sys.stderr)
        subprocess.run(["docker", "rm", "-f", *ids], capture_output=True, check=False)


def kernel_config(image: str = PYTHON_IMAGE, cpu: str = "1", mem: str = "256m") -> dict[str, Any]:
    return {"image": {"canonical": image, "is_local": True},
            "resource_slots": {"cpu": cpu, "mem": mem}}


def new_id() -> str:
    return str(uuid.uuid4())


def run_and_emit(name: str, work: Coroutine[Any, Any, dict[str, Any]],
                 rows: Callable[[dict[str, Any]], list[tuple[str, str, str, str]]],
                 out: Path | None) -> None:
    """Run a benchmark's ``work``, sweep what its baselines left (always), then print and save
    its rows; a leftover container fails the run after its results are saved."""
    try:
        result = asyncio.run(work)
    finally:
        left = sweep_containers()
    emit(name, rows(result), result, out)
    if left:
        raise SystemExit(f"{left} labelled container(s) were left and have been removed")
