"""The whole system: a Backend.AI 26.9.6 manager server runs sessions on a Berth agent.

Every session is created, used and destroyed through the manager's REST API with Backend.AI's
own client SDK (``scripts/bai.py``); destroys are never forced, and each session must reach
TERMINATED. The tests share one system (conftest ``e2e_system``) and run in file order; each
leaves no session behind (the cluster session needs both of the node's CPUs).
"""

from __future__ import annotations

import asyncio
import json
import threading
import urllib.request
import uuid
from collections.abc import Iterator
from decimal import Decimal
from typing import Any

import pytest
import redis
from support.docker import containers

from .conftest import E2ESystem

# The first test also starts the system (Postgres, the manager's database and server: a few
# minutes on two cores), and the teardown of the last stops it.
pytestmark = pytest.mark.timeout(600)

# Interactive sessions print this from the kernel: proof the code ran there, not anywhere else.
PROBE = "import socket; print('berth-e2e', socket.gethostname(), 6 * 7)"


def session_name(kind: str) -> str:
    return f"e2e-{kind}-{uuid.uuid4().hex[:6]}"


def create(system: E2ESystem, name: str, *args: str) -> dict[str, Any]:
    created: dict[str, Any] = system.bai("create", name, *args)
    return created


def destroy_cleanly(system: E2ESystem, name: str, session_id: str) -> dict[str, Any]:
    """A normal destroy: the session reaches TERMINATED, every kernel too, and the agent
    keeps none of its containers."""
    done: dict[str, Any] = system.bai("destroy", name, session_id)
    assert done["status"] == "TERMINATED", done
    for kernel in done["state"]["kernels"]:
        assert kernel["status"] == "TERMINATED", kernel
        assert containers(system.agent.agent_id, kernel["kernel_id"]) == [], kernel
    return done


def running(created: dict[str, Any], size: int = 1) -> dict[str, Any]:
    assert created["status"] == "RUNNING", created
    state: dict[str, Any] = created["state"]
    assert len(state["kernels"]) == size, state
    for kernel in state["kernels"]:
        assert kernel["status"] == "RUNNING", kernel
        assert kernel["agent"] is not None
    return state


# ───────────────────────────────────────────────────────────────── the node


def test_manager_sees_berth_alive_with_its_slots(e2e_system: E2ESystem) -> None:
    agents = {a["id"]: a for a in e2e_system.bai("agents")["agents"]}
    agent = agents.get(e2e_system.agent.agent_id)
    assert agent is not None, agents
    assert agent["status"] == "ALIVE"
    assert agent["scaling_group"] == "default"
    assert agent["addr"] == e2e_system.agent.addr
    slots = {k: Decimal(v) for k, v in json.loads(agent["available_slots"]).items()}
    assert slots["cpu"] >= 2, slots  # the cluster test needs two kernels of one CPU each
    assert slots["mem"] > 2**30, slots


# ───────────────────────────────────────────────────────────────── sessions


def test_interactive_session_runs_code(e2e_system: E2ESystem) -> None:
    name = session_name("interactive")
    created = create(e2e_system, name, "interactive")
    state = running(created)
    kernel = state["kernels"][0]
    assert kernel["agent"] == e2e_system.agent.agent_id
    assert containers(e2e_system.agent.agent_id, kernel["kernel_id"]), kernel

    out = e2e_system.bai("run", name, PROBE)
    assert out["status"] == "finished", out
    assert out["exit_code"] == 0, out
    assert out["stdout"].split() == ["berth-e2e", kernel["cluster_hostname"], "42"], out

    done = destroy_cleanly(e2e_system, name, created["session_id"])
    assert done["state"]["status_info"] == "user-requested", done


@pytest.fixture
def broadcasts(e2e_system: E2ESystem) -> Iterator[list[dict[str, Any]]]:
    """Every broadcast event (Redis pub/sub ``events_all``) while the test runs, decoded."""
    addr = e2e_system.redis_addr
    host, _, port = addr.rpartition(":")
    client = redis.Redis(host=host, port=int(port))
    pubsub = client.pubsub()  # type: ignore[no-untyped-call]
    pubsub.subscribe("events_all")
    seen: list[dict[str, Any]] = []
    stop = threading.Event()

    def listen() -> None:
        while not stop.is_set():
            msg = pubsub.get_message(ignore_subscribe_messages=True, timeout=0.5)
            if msg is not None:
                body = json.loads(msg["data"])
                seen.append({"name": body["name"], "source": body.get("source"),
                             "payload": json.loads(body["payload"])})

    thread = threading.Thread(target=listen, daemon=True)
    thread.start()
    try:
        yield seen
    finally:
        stop.set()
        thread.join(5)
        pubsub.close()
        client.close()


def test_batch_session_finishes_with_its_exit_code(
        e2e_system: E2ESystem, broadcasts: list[dict[str, Any]]) -> None:
    name = session_name("batch")
    command = "python3 -c 'import sys; print(\"batch-out\"); sys.exit(3)'"
    created = create(e2e_system, name, "batch", command)
    session_id = created["session_id"]
    # The job's end is the session's end: the manager terminates it by itself.
    finished = e2e_system.bai("wait", session_id, "TERMINATED,ERROR,CANCELLED", "120")
    assert finished["status"] == "TERMINATED", finished
    state = finished["state"]
    assert state["result"] == "FAILURE", state
    assert state["status_info"] == "task-failed", state
    for kernel in state["kernels"]:
        assert kernel["status"] == "TERMINATED", kernel
        assert containers(e2e_system.agent.agent_id, kernel["kernel_id"]) == [], kernel
    # The exit code travels in Berth's session_failure event (the manager keeps only the
    # result); the one the manager consumed is also broadcast.
    results = [b for b in broadcasts if b["name"] in ("session_success", "session_failure")
               and b["payload"]["session_id"] == session_id]
    assert results, broadcasts
    # The command ran once: one trigger from the manager, one job on the node.
    log = e2e_system.agent.log_path.read_text(errors="replace")
    assert log.count(f"batch session {session_id} finished with exit code 3") == 1, results
    assert {(b["name"], b["payload"]["exit_code"], b["source"]) for b in results} == {
        ("session_failure", 3, e2e_system.agent.agent_id)}, results
    print(f"session result broadcasts seen: {len(results)}")


def test_cluster_kernels_reach_each_other_by_hostname(e2e_system: E2ESystem) -> None:
    name = session_name("cluster")
    created = create(e2e_system, name, "interactive", "", "2")
    state = running(created, size=2)
    hostnames = sorted(k["cluster_hostname"] for k in state["kernels"])
    assert hostnames == ["main1", "sub1"], state
    # From the main kernel: each hostname resolves, and a TCP probe to a closed port is
    # refused (a reset from that kernel's stack), not unreachable or timed out.
    code = (
        "import json, socket\n"
        "out = {}\n"
        "for h in ('main1', 'sub1'):\n"
        "    ip = socket.gethostbyname(h)\n"
        "    s = socket.socket(); s.settimeout(5)\n"
        "    try:\n"
        "        s.connect((ip, 1)); r = 'open'\n"
        "    except ConnectionRefusedError:\n"
        "        r = 'refused'\n"
        "    except OSError as e:\n"
        "        r = repr(e)\n"
        "    out[h] = [ip, r]\n"
        "out['me'] = socket.gethostname()\n"
        "print(json.dumps(out))\n")
    out = e2e_system.bai("run", name, code)
    assert out["exit_code"] == 0, out
    seen = json.loads(out["stdout"])
    assert seen["me"] == "main1", seen
    assert seen["main1"][1] == seen["sub1"][1] == "refused", seen
    assert seen["main1"][0] != seen["sub1"][0], seen
    destroy_cleanly(e2e_system, name, created["session_id"])


def test_service_port_answers_through_the_app_listing(e2e_system: E2ESystem) -> None:
    name = session_name("app")
    created = create(e2e_system, name, "interactive")
    state = running(created)
    listing = e2e_system.bai("apps", name)["apps"]
    assert [a["name"] for a in listing] == ["http-server"], listing
    assert listing[0]["protocol"] == "http", listing
    ports = {p["name"]: p for p in json.loads(state["service_ports"])}
    host_port = ports["http-server"]["host_ports"][0]
    assert ports["http-server"]["container_ports"] == listing[0]["ports"], (ports, listing)

    # The user starts the app: the manager has Berth start it in the kernel (RPC
    # start_service), then hands the kernel's host and port to the app proxy.
    before = len(e2e_system.app_proxy.confs)
    reply = e2e_system.bai("start-service", name, "http-server")["reply"]
    assert reply["token"] == f"e2e-token-{before + 1}", reply
    conf = e2e_system.app_proxy.confs[-1]
    assert conf["kernel_port"] == host_port, conf
    assert conf["session"]["id"] == created["session_id"], conf
    url = f"http://{conf['kernel_host']}:{conf['kernel_port']}/"
    with urllib.request.urlopen(url, timeout=10) as resp:
        assert resp.status == 200
        resp.read()
    destroy_cleanly(e2e_system, name, created["session_id"])


def test_session_survives_a_kill_9_of_berth(e2e_system: E2ESystem) -> None:
    name = session_name("kill9")
    created = create(e2e_system, name, "interactive")
    state = running(created)
    kernel = state["kernels"][0]
    before = containers(e2e_system.agent.agent_id, kernel["kernel_id"])
    assert before, kernel

    e2e_system.agent.kill9()
    asyncio.run(e2e_system.agent.start())

    # The kernel's container ran on and was adopted; the manager still has the session
    # RUNNING, and it still runs code (the manager's RPC reaches the new process).
    assert containers(e2e_system.agent.agent_id, kernel["kernel_id"]) == before
    after = e2e_system.bai("status", created["session_id"])["state"]
    assert after["status"] == "RUNNING", after
    assert [k["status"] for k in after["kernels"]] == ["RUNNING"], after
    # Retried for up to 75 s: a pool ping that fell into the restart makes the manager refuse
    # calls until its next ping (every 30 s) succeeds.
    out = e2e_system.bai("run", name, PROBE, "75")
    print(f"calls refused after the restart: {out['errors']}")
    assert out["exit_code"] == 0, out
    assert out["stdout"].split() == ["berth-e2e", "main1", "42"], out
    agents = {a["id"]: a for a in e2e_system.bai("agents")["agents"]}
    assert agents[e2e_system.agent.agent_id]["status"] == "ALIVE", agents
    destroy_cleanly(e2e_system, name, created["session_id"])
