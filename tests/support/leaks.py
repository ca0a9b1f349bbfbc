"""The leak audit every node-level fault test ends with: what a real agent process holds must be
exactly what its live kernels need, seen from outside the agent and from its own reports.

* containers with the agent's owner label (the engine, through the docker CLI), each one a
  live kernel's, running;
* kernel scratch dirs and ledgers under its scratch root: those of the live kernels;
* host ports reserved (``berth_node_host_ports_reserved``) and slots allocated (``get_status``
  ``slots.used``, and ``berth_node_slots_allocated``): the live kernels' and nothing more;
* loop devices backed by files under the scratch root, and mounts under it: none beyond what
  the live kernels' scratch type needs (hostdir: none);
* the agent's open file descriptors (``/proc/PID/fd``): at most ``fd_slack`` above a baseline
  taken when the agent was warm, plus ``FDS_PER_KERNEL`` for each live kernel (its runner
  socket and the cgroup counter files the stats reader keeps open).
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import urllib.request
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path
from typing import Any

from prometheus_client.parser import text_string_to_metric_families

from .dockerd import mounts_under
from .procs import LOOPBACK, AgentProcess, binary

# A live kernel's own descriptors in the agent: its runner socket, and up to 12 cgroup counter
# files plus /proc/PID/net/dev that the stats reader holds open between cycles.
FDS_PER_KERNEL = 14

OWNER = "ai.backend.owner"
KERNEL_ID = "ai.backend.kernel-id"
LEDGER = "config/berth-ledger.json"


def fd_count(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/fd"))


def owned_containers(agent_id: str, docker_host: str | None = None) -> dict[str, str]:
    """container id → kernel id for every container (any state) with ``agent_id``'s label."""
    host = ["-H", docker_host] if docker_host else []
    out = subprocess.run(
        [binary("docker", "docker.io"), *host, "ps", "-a", "--no-trunc",
         "--filter", f"label={OWNER}={agent_id}",
         "--format", f'{{{{.ID}}}} {{{{.Label "{KERNEL_ID}"}}}} {{{{.State}}}}'],
        check=True, capture_output=True, text=True, timeout=60).stdout
    found = {}
    for line in out.splitlines():
        cid, kid, state = (line.split() + ["", ""])[:3]
        found[cid] = f"{kid} {state}"
    return found


def loop_devices_under(root: Path) -> list[str]:
    out = subprocess.run([binary("losetup", "mount"), "--list", "--noheadings",
                          "--output", "NAME,BACK-FILE"], check=False, capture_output=True,
                         text=True).stdout
    prefix = str(root.resolve())
    return [line for line in out.splitlines() if prefix in line]


def scrape(port: int) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    with urllib.request.urlopen(f"http://{LOOPBACK}:{port}/metrics", timeout=10) as reply:
        text = reply.read().decode()
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for f in text_string_to_metric_families(text) for s in f.samples}


@dataclass
class Audit:
    """What was found; :meth:`problems` lists every mismatch in words."""

    kernels: dict[str, dict[str, Any]]  # live kernels from get_status
    containers: dict[str, str]
    scratch_dirs: set[str]
    ledgers: set[str]
    ports_gauge: float | None
    slots_used: dict[str, Decimal]
    loops: list[str]
    mounts: list[str]
    fds: int
    fd_baseline: int | None
    fd_slack: int
    metrics: dict[str, float] = field(default_factory=dict)

    def problems(self) -> list[str]:
        found = []
        live = {k for k, v in self.kernels.items()}
        not_running = {k: v["state"] for k, v in self.kernels.items() if v["state"] != "RUNNING"}
        if not_running:
            found.append(f"kernels left in transitional states: {not_running}")
        wanted = {v["container_id"]: k for k, v in self.kernels.items()}
        for cid, desc in self.containers.items():
            kid, state = (desc.split() + [""])[:2]
            if cid not in wanted:
                found.append(f"container {cid[:12]} ({kid}, {state}) belongs to no live kernel")
            elif state != "running":
                found.append(f"container {cid[:12]} of live kernel {kid} is {state}")
        for cid, kid in wanted.items():
            if cid not in self.containers:
                found.append(f"live kernel {kid} has no container ({cid})")
        if self.scratch_dirs != live:
            found.append(f"scratch dirs {sorted(self.scratch_dirs ^ live)} differ from kernels")
        if self.ledgers != live:
            found.append(f"ledgers {sorted(self.ledgers ^ live)} differ from kernels")
        ports = sum(len(p) for v in self.kernels.values() for p in v["host_ports"].values())
        if self.ports_gauge is None or self.ports_gauge < ports or (
                not self.kernels and self.ports_gauge != 0):
            found.append(f"host ports reserved {self.ports_gauge}, live kernels hold {ports}")
        if not self.kernels and any(self.slots_used.values()):
            found.append(f"slots still allocated with no kernel: {self.slots_used}")
        for metric, value in self.metrics.items():
            if value != len(live):
                found.append(f"{metric} reads {value}, {len(live)} kernels live")
        if self.loops:
            found.append(f"loop devices under the scratch root: {self.loops}")
        if self.mounts:
            found.append(f"mounts under the scratch root: {self.mounts}")
        allowed = None if self.fd_baseline is None else (
            self.fd_baseline + self.fd_slack + FDS_PER_KERNEL * len(live))
        if allowed is not None and self.fds > allowed:
            found.append(f"agent holds {self.fds} fds, baseline {self.fd_baseline}, "
                         f"{len(live)} kernels live (at most {allowed})")
        return found


async def audit(agent: AgentProcess, *, docker_host: str | None = None,
                fd_baseline: int | None = None, fd_slack: int = 24) -> Audit:
    """Everything :class:`Audit` checks, read from a running agent (``agent.alive``)."""
    assert agent.proc is not None and agent.alive, f"the agent is not running:\n{agent.log()}"
    async with agent.client(timeout=30) as c:
        status = await c.get_status()
    kernels = {k["kernel_id"]: k for k in status["kernels"]}
    scratch = agent.root / "scratch"
    dirs = {p.name for p in scratch.iterdir()} if scratch.is_dir() else set()
    ledgers = {p.parent.parent.name for p in scratch.glob(f"*/{LEDGER}")}
    samples = await asyncio.to_thread(scrape, agent.internal_port)
    a = (("agent_id", agent.agent_id),)
    containers = await asyncio.to_thread(owned_containers, agent.agent_id, docker_host)
    return Audit(
        kernels=kernels, containers=containers, scratch_dirs=dirs, ledgers=ledgers,
        ports_gauge=samples.get(("berth_node_host_ports_reserved", a)),
        slots_used={k: Decimal(v) for k, v in status["slots"]["used"].items()},
        loops=loop_devices_under(scratch) if scratch.is_dir() else [],
        mounts=[m for m in mounts_under(scratch) if m != str(scratch.resolve())]
        if scratch.is_dir() else [],
        fds=fd_count(agent.proc.pid), fd_baseline=fd_baseline, fd_slack=fd_slack,
        metrics={"berth_node_scratch_dirs": samples.get(("berth_node_scratch_dirs", a), -1),
                 "berth_node_ledgers": samples.get(("berth_node_ledgers", a), -1)},
    )


async def assert_no_leaks(agent: AgentProcess, *, docker_host: str | None = None,
                          fd_baseline: int | None = None, fd_slack: int = 24,
                          settle: float = 20.0) -> Audit:
    """Audit until clean (the janitor gets ``settle`` seconds to catch up); fail with every
    problem of the last audit otherwise."""
    deadline = asyncio.get_running_loop().time() + settle
    while True:
        found = await audit(agent, docker_host=docker_host, fd_baseline=fd_baseline,
                            fd_slack=fd_slack)
        problems = found.problems()
        if not problems:
            return found
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError("leak audit failed:\n  " + "\n  ".join(problems)
                                 + f"\nagent log:\n{agent.log()}")
        await asyncio.sleep(0.5)
