"""The warm pool on real Docker: refill, claim (a pool kernel indistinguishable from a cold
one), fallback to cold with the miss reason counted, a claim cut half-way, restart adoption,
destroy. Not timed (benchmarks/warm_pool.py measures)."""

from __future__ import annotations

import asyncio
import json
import socket
import subprocess
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from berth.daemon.agent import Agent
from berth.daemon.facade import AgentFacade
from berth.kernel.warmpool import POOL_DIR, WarmPool

from .conftest import PYTHON, agent_config, assert_clean, eventually, kernel_config

POOL = {"warm-pool.images": {PYTHON: 2}, "warm-pool.max-total": 2,
        "warm-pool.cpu": "0.25", "warm-pool.mem": "128m", "warm-pool.reserve-cpu": "0.5",
        "warm-pool.reserve-mem": "256m", "warm-pool.refill-interval-sec": 0.5}
SPEC = kernel_config(PYTHON, resource_slots={"cpu": "0.5", "mem": "192m"},
                     environ={"FOO": "bar"})


def pool_of(agent: Agent) -> WarmPool:
    pool = agent.parts.lifecycle.warm_pool
    assert isinstance(pool, WarmPool)
    return pool


def docker_json(*args: str) -> Any:
    out = subprocess.run(["docker", *args], check=True, capture_output=True, text=True)
    return json.loads(out.stdout)


def pool_containers(agent_id: str) -> list[str]:
    out = subprocess.run(["docker", "ps", "-aq", "--no-trunc", "--filter",
                          f"label=ai.backend.owner={agent_id}", "--filter", "label=berth.warm-pool"],
                         check=True, capture_output=True, text=True).stdout
    return out.split()


def counter(agent: Agent, name: str, **labels: str) -> float:
    value = agent.parts.telemetry.metrics.registry.get_sample_value(
        name, {"agent_id": agent.agent_id, **labels})
    return value or 0.0


async def full(agent: Agent, size: int = 2) -> None:
    async def ready() -> bool:
        return len(pool_of(agent).idle.get(PYTHON, [])) == size
    await eventually(ready, 90)


async def start_agent(root: Path, agent_id: str, **overrides: Any) -> Agent:
    a = Agent(agent_config(root, agent_id, **{**POOL, **overrides}))
    await a.startup()
    return a


async def stop_agent(a: Agent, *, drain: bool = True) -> None:
    await AgentFacade.of(a).reset_agent()
    pool = a.parts.lifecycle.warm_pool
    if pool is not None and drain:
        await pool.close()
        await pool.drain()
    await a.shutdown()


@pytest.fixture
async def pooled(tmp_path: Path, agent_id: str) -> AsyncIterator[Agent]:
    a = await start_agent(tmp_path, agent_id)
    try:
        yield a
    finally:
        await stop_agent(a)
        assert not pool_containers(agent_id)
        (tmp_path / "scratch" / POOL_DIR).rmdir()  # empty: every member's scratch went
        assert_clean(tmp_path / "scratch")


async def run_code(facade: AgentFacade, kid: str, code: str) -> str:
    result = await facade.execute_code(kid, code)
    return "".join(str(item[1]) for item in result.get("console", []) if item[0] == "stdout")


PROBE = r"""
import json, os
def read(*paths):
    for p in paths:
        try:
            return open(p).read().strip()
        except OSError:
            pass
    return None
open('/home/work/probe.txt', 'w').write('x')
print(json.dumps({
  "env": dict(os.environ), "uid": os.getuid(), "gid": os.getgid(), "groups": os.getgroups(),
  "cwd": os.getcwd(), "hostname": os.uname().nodename,
  "cpu": read('/sys/fs/cgroup/cpu/cpu.cfs_quota_us', '/sys/fs/cgroup/cpu.max'),
  "period": read('/sys/fs/cgroup/cpu/cpu.cfs_period_us'),
  "mem": read('/sys/fs/cgroup/memory/memory.limit_in_bytes', '/sys/fs/cgroup/memory.max'),
  "swap": read('/sys/fs/cgroup/memory/memory.memsw.limit_in_bytes',
               '/sys/fs/cgroup/memory.swap.max'),
  "pids": read('/sys/fs/cgroup/pids/pids.max', '/sys/fs/cgroup/pids.max'),
  "cpuset": read('/sys/fs/cgroup/cpuset/cpuset.cpus', '/sys/fs/cgroup/cpuset.cpus'),
  "config": sorted(os.listdir('/home/config')),
  "environ_txt": open('/home/config/environ.txt').read(),
}))
"""

# Values that name the kernel itself, compared after putting the kernel's id in its place.
IDENTITY = ("BACKENDAI_KERNEL_ID", "BACKENDAI_SESSION_ID")


async def probe(agent: Agent, kid: str) -> dict[str, Any]:
    out = await run_code(AgentFacade.of(agent), kid, PROBE)
    data: dict[str, Any] = json.loads(out)
    data["env"] = {k: v for k, v in data["env"].items() if k not in IDENTITY}
    data["environ_txt"] = data["environ_txt"].replace(kid, "KID")
    return data


def serve_http(agent: Agent, kid: str) -> str:
    return ("import threading, http.server\n"
            "srv = http.server.HTTPServer(('0.0.0.0', 8080), http.server.SimpleHTTPRequestHandler)\n"
            "threading.Thread(target=srv.serve_forever, daemon=True).start()\nprint('up')\n")


def reachable(port: int) -> bool:
    with socket.create_connection(("127.0.0.1", port), timeout=5) as s:
        s.sendall(b"GET / HTTP/1.0\r\n\r\n")
        return s.recv(12).startswith(b"HTTP/1.0 200")


async def test_a_pool_kernel_is_indistinguishable_from_a_cold_one(pooled: Agent,
                                                                  tmp_path: Path) -> None:
    facade = AgentFacade.of(pooled)
    pool = pool_of(pooled)
    events: list[tuple[str, dict[str, Any]]] = []
    emit = pooled.parts.lifecycle.events.emit

    def record(name: str, payload: Any, *, broadcast: bool = False) -> None:
        events.append((name, dict(payload)))
        emit(name, payload, broadcast=broadcast)
    pooled.parts.lifecycle.events.emit = record  # type: ignore[method-assign]
    await full(pooled)
    member = pool.idle[PYTHON][0]
    warm, cold = str(uuid.uuid4()), str(uuid.uuid4())
    warm_reply = await facade.create_kernel(warm, warm, SPEC)
    assert warm_reply["container_id"] == member.container_id  # it was claimed
    assert counter(pooled, "berth_warm_pool_hits_total", image=PYTHON) == 1
    pooled.parts.lifecycle.warm_pool = None  # the same spec, cold
    try:
        cold_reply = await facade.create_kernel(cold, cold, SPEC)
    finally:
        pooled.parts.lifecycle.warm_pool = pool
    assert cold_reply["container_id"] not in {m.container_id for m in pool.idle[PYTHON]}

    # The reply the Manager reads has the same shape and the same kinds of values.
    for reply in (warm_reply, cold_reply):
        assert set(reply) == set(cold_reply)
        assert [d["name"] for d in reply["service_ports"]] == ["http-server"]
    w, c = await probe(pooled, warm), await probe(pooled, cold)
    # Limits, user, env, scratch: the same, cores aside (each kernel's own allocation).
    for data, kid in ((w, warm), (c, cold)):
        cores = docker_json("inspect", pooled.registry.get(kid).container_id or "")[0][
            "HostConfig"]["CpusetCpus"]
        allocation = pooled.registry.get(kid).allocation
        assert allocation is not None
        assert data.pop("cpuset") == cores == ",".join(
            sorted(allocation.devices["cpu"]["cpu"], key=int))
    assert w == c
    assert w["cpu"] in ("50000", "50000 100000") and w["mem"] == str(192 * 2**20)
    assert w["env"]["FOO"] == "bar" and w["uid"] == 9001 and w["hostname"] == "main1"
    for kid in (warm, cold):
        assert (tmp_path / "scratch" / kid / "work" / "probe.txt").read_text() == "x"
        name = docker_json("inspect", pooled.registry.get(kid).container_id or "")[0]["Name"]
        assert name == f"/berth-kernel.{kid}"
    # Its service port answers on the host port it was given.
    for kid in (warm, cold):
        assert "up" in await run_code(facade, kid, serve_http(pooled, kid))
        port = pooled.registry.get(kid).host_ports["http-server"][0]
        assert await asyncio.to_thread(reachable, port)
    # Events: the same names in the same order, kernel_started with the same payload shape.
    def story(kid: str) -> list[str]:
        return [n for n, p in events if p.get("kernel_id") == kid]
    assert story(warm) == story(cold) == ["kernel_preparing", "kernel_creating",
                                          "kernel_started"]
    started = {p["kernel_id"]: p for n, p in events if n == "kernel_started"}
    assert set(started[warm]) == set(started[cold])
    assert set(started[warm]["creation_info"]) == set(started[cold]["creation_info"])
    # Destroy cleans everything of both; the pool refills behind the claim.
    ports = [p for kid in (warm, cold) for p in pooled.registry.get(kid).host_ports["http-server"]]
    for kid in (warm, cold):
        await facade.destroy_kernel(kid, kid)
    for kid in (warm, cold):
        assert not (tmp_path / "scratch" / kid).exists()
    assert all(p in pooled.parts.ports._free for p in ports)  # given back to the port pool
    await full(pooled)
    assert counter(pooled, "berth_warm_pool_refill_seconds_count") >= 3


async def test_specs_the_pool_cannot_serve_go_cold_with_the_reason_counted(
        pooled: Agent) -> None:
    facade = AgentFacade.of(pooled)
    await full(pooled)
    members = {m.container_id for m in pool_of(pooled).idle[PYTHON]}
    cases = [("bootstrap", kernel_config(PYTHON, bootstrap_script="true")),
             ("ports", kernel_config(PYTHON, preopen_ports=[9000])),
             ("image-not-pooled", kernel_config())]
    for reason, config in cases:
        kid = str(uuid.uuid4())
        reply = await facade.create_kernel(kid, kid, config)
        assert reply["container_id"] not in members
        assert counter(pooled, "berth_warm_pool_misses_total", reason=reason) == 1
        await facade.destroy_kernel(kid, kid)
    assert {m.container_id for m in pool_of(pooled).idle[PYTHON]} == members  # untouched


@pytest.mark.parametrize("step", ["taken", "scratch-moved", "ledger-written", "updated",
                                  "claimed"])
async def test_a_claim_failing_half_way_removes_the_pool_container_and_starts_cold(
        pooled: Agent, tmp_path: Path, step: str) -> None:
    pool = pool_of(pooled)
    await full(pooled)
    member = pool.idle[PYTHON][0]

    def fail(at: str) -> None:
        if at == step:
            raise RuntimeError(f"injected failure at {at}")
    pool.on_claim_step = fail
    kid = str(uuid.uuid4())
    reply = await AgentFacade.of(pooled).create_kernel(kid, kid, SPEC)
    assert reply["container_id"] != member.container_id
    assert pooled.registry.get(kid).state == "RUNNING"
    assert counter(pooled, "berth_warm_pool_misses_total", reason="claim-failed") == 1
    assert member.container_id not in await asyncio.to_thread(pool_containers, pooled.agent_id)
    assert not (tmp_path / "scratch" / POOL_DIR / member.member_id).exists()
    assert "1" in await run_code(AgentFacade.of(pooled), kid, "print(1)")
    await AgentFacade.of(pooled).destroy_kernel(kid, kid)
    assert not (tmp_path / "scratch" / kid).exists()


async def test_restart_adopts_idle_members_keeps_the_claimed_kernel_and_reaps_when_unpooled(
        tmp_path: Path, agent_id: str) -> None:
    a = await start_agent(tmp_path, agent_id)
    await full(a)
    kid = str(uuid.uuid4())
    await AgentFacade.of(a).create_kernel(kid, kid, SPEC)
    await full(a)
    idle = {m.container_id for m in pool_of(a).idle[PYTHON]}
    claimed = a.registry.get(kid).container_id
    await pool_of(a).close()
    await a.shutdown()  # kernels and members keep running

    b = await start_agent(tmp_path, agent_id)
    try:
        assert {m.container_id for m in pool_of(b).idle[PYTHON]} == idle  # adopted
        assert b.registry.get(kid).container_id == claimed  # the kernel, never a member
        assert "1" in await run_code(AgentFacade.of(b), kid, "print(1)")
        other = str(uuid.uuid4())
        reply = await AgentFacade.of(b).create_kernel(other, other, SPEC)
        assert reply["container_id"] in idle  # an adopted member serves a claim
        await AgentFacade.of(b).destroy_kernel(other, other)
        await full(b)
        await pool_of(b).close()
        await b.shutdown()
        # Started again without the pool: its members go, the kernel stays.
        b = await start_agent(tmp_path, agent_id, **{"warm-pool.images": {}})
        assert not pool_of(b).s.enabled and not pool_of(b).idle.get(PYTHON)  # off: reaps only
        assert pool_containers(agent_id) == [claimed]  # the kernel's container only
        assert b.registry.get(kid).container_id == claimed
    finally:
        await stop_agent(b)
    assert not pool_containers(agent_id)
    pool_dir = tmp_path / "scratch" / POOL_DIR
    assert not pool_dir.exists() or not list(pool_dir.iterdir())
    if pool_dir.exists():
        pool_dir.rmdir()
    assert_clean(tmp_path / "scratch")
