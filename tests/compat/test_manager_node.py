"""A node as the 26.9.6 manager sees it across a start and a clean stop
(scripts/manager_node.py): the events of its life (agent_started, agent_heartbeat,
service_registered; agent_terminated, service_deregistered) decoded with the manager's
classes, the heartbeat read into the manager's AgentInfo and agent upsert, the installed-image
list read with the manager's image client, service discovery through the manager's etcd and
Redis discovery classes, and the ``nodes/agents/{id}`` keys in etcd.

The node is an agent of this module's own (with its own Redis and etcd), since the module
stops it; its consumer group ``manager`` exists before it starts, as a running manager's does.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
import redis
from support.docker import remove_containers
from support.procs import LOOPBACK, EtcdServer, RedisServer

from .conftest import RUN_LABEL, CompatNode, curve_agent, run_script

pytestmark = pytest.mark.timeout(300)
HEARTBEAT_INTERVAL = 2.0


@pytest.fixture(scope="module")
def life(tmp_path_factory: pytest.TempPathFactory, compat_keys: Any) -> Iterator[dict[str, Any]]:
    """Start a node, read it as the manager does, stop it cleanly, read it again."""
    root = tmp_path_factory.mktemp("compat-life")
    namespace = f"life{uuid.uuid4().hex[:6]}"
    with RedisServer(root / "redis") as rds, EtcdServer(root / "etcd", "berth-life") as etcd:
        # what RedisConsumer.create does when a manager starts: XGROUP CREATE events manager $
        redis.Redis(host=LOOPBACK, port=rds.port, db=rds.db).xgroup_create(
            "events", "manager", id="$", mkstream=True)
        agent = curve_agent(root / "agent", f"{RUN_LABEL}-life-{uuid.uuid4().hex[:6]}",
                            compat_keys, rds, etcd, namespace, port_base=28000,
                            extra_toml=f"[debug]\nheartbeat-interval = {HEARTBEAT_INTERVAL}\n")
        node = CompatNode(agent, rds, etcd, namespace, compat_keys)
        result: dict[str, Any] = {"agent_id": agent.agent_id}
        try:
            asyncio.run(agent.start())
            result["running"] = run_script("manager_node.py", "running", env=node.script_env(),
                                           keys=compat_keys)
            agent.stop()  # SIGTERM: a clean stop
            result["exit_code"] = agent.proc.returncode if agent.proc else None
            result["stopped"] = run_script("manager_node.py", "stopped", env=node.script_env(),
                                           keys=compat_keys)
        except pytest.fail.Exception as exc:
            pytest.fail(f"{exc}\n--- agent log ---\n{agent.log()[-3000:]}")
        finally:
            agent.stop()
            remove_containers(agent.agent_id)
        yield result


def events(phase: dict[str, Any], name: str) -> list[dict[str, Any]]:
    return [e for e in phase["queue"]["anycast"] if e.get("name") == name and "error" not in e]


def own_records(records: Any, agent_id: str) -> list[dict[str, Any]]:
    """The ``agent`` group's records (this module's etcd and Redis serve this node only)."""
    assert isinstance(records, list), records
    return [r for r in records if r["service_group"] == "agent"]


# ───────────────────────────────────────────────────────────────── while running


def test_every_event_of_a_start_decodes(life: dict[str, Any]) -> None:
    queue = life["running"]["queue"]
    assert queue["failures"] == []
    assert {e["source"] for e in queue["anycast"]} == {life["agent_id"]}


def test_agent_started_decodes(life: dict[str, Any]) -> None:
    assert [e["body"]["reason"] for e in events(life["running"], "agent_started")]


def test_agent_started_follows_the_first_heartbeat(life: dict[str, Any]) -> None:
    """handle_agent_started skips an agent whose row the first heartbeat has not made yet."""
    names = [e.get("name") for e in life["running"]["queue"]["anycast"]]
    assert "agent_heartbeat" in names and "agent_started" in names, names
    assert names.index("agent_heartbeat") < names.index("agent_started"), names


def test_heartbeat_reads_as_agent_info_and_the_manager_upsert(life: dict[str, Any]) -> None:
    running = life["running"]
    assert events(running, "agent_heartbeat"), running.get("heartbeat_wait")
    upsert = running["upsert"]
    assert upsert["id"] == life["agent_id"]
    assert upsert["addr"].startswith("tcp://")
    assert upsert["architecture"] in {"x86_64", "aarch64"}
    slots = running["available_slots"]
    assert float(slots["cpu"]) > 0 and float(slots["mem"]) > 0, slots
    assert running["slot_types"]["cpu"] == "count" and running["slot_types"]["mem"] == "bytes"


def test_the_manager_reaches_the_agent_by_the_heartbeat_addr_and_key(life: dict[str, Any]
                                                                      ) -> None:
    assert life["running"]["ping_by_heartbeat"] == "ping"


def test_installed_images_read_by_the_manager_image_client(life: dict[str, Any]) -> None:
    images = life["running"]["installed_images"]
    assert isinstance(images, list) and images, images
    # the manager matches (canonical, architecture) against its image rows: architecture
    # in its own naming (x86_64, aarch64), digest the engine's config digest
    python = [i for i in images if i["canonical"].endswith("berth/python:3.11")]
    assert python, images
    assert all(i["architecture"] in {"x86_64", "aarch64"} for i in images), images
    assert all(i["digest"].startswith("sha256:") for i in images), images


def test_service_discovery_etcd_lists_the_agent_with_a_uuid_id(life: dict[str, Any]) -> None:
    records = life["running"]["etcd_sd"]
    assert isinstance(records, list), records  # discover() raised otherwise
    mine = own_records(records, life["agent_id"])
    assert len(mine) == 1, records
    uuid.UUID(mine[0]["id"])


def test_service_discovery_redis_lists_the_agent_with_a_uuid_id(life: dict[str, Any]) -> None:
    records = life["running"]["redis_sd"]
    assert isinstance(records, list), records
    mine = own_records(records, life["agent_id"])
    assert len(mine) == 1, records
    uuid.UUID(mine[0]["id"])
    assert mine[0]["id"] == own_records(life["running"]["etcd_sd"], life["agent_id"])[0]["id"]


def test_service_registered_decodes(life: dict[str, Any]) -> None:
    registered = events(life["running"], "service_registered")
    assert registered, [e.get("name") for e in life["running"]["queue"]["anycast"]]
    body = registered[0]["body"]
    assert body["service_group"] == "agent"
    assert body["endpoints"], body


def test_nodes_agents_entry_while_running(life: dict[str, Any]) -> None:
    node = life["running"]["node"]
    assert node["status"] in {"starting", "running"}, node
    assert node["ip"], node
    assert isinstance(node["watcher_port_as_read"], int), node


# ───────────────────────────────────────────────────────────────── after a clean stop


def test_a_clean_stop_exits_zero(life: dict[str, Any]) -> None:
    assert life["exit_code"] == 0


def test_every_event_of_a_stop_decodes(life: dict[str, Any]) -> None:
    assert life["stopped"]["queue"]["failures"] == []


def test_agent_terminated_and_service_deregistered_decode(life: dict[str, Any]) -> None:
    stopped = life["stopped"]
    terminated = events(stopped, "agent_terminated")
    assert terminated, [e.get("name") for e in stopped["queue"]["anycast"]]
    # anything but agent-lost / agent-restart marks the agent TERMINATED
    assert terminated[0]["body"]["reason"] not in {"agent-lost", "agent-restart"}
    deregistered = events(stopped, "service_deregistered")
    assert deregistered, [e.get("name") for e in stopped["queue"]["anycast"]]
    instance = events(life["running"], "service_registered")[0]["body"]["instance_id"]
    assert deregistered[0]["body"]["instance_id"] == instance


def test_nodes_agents_entry_gone_after_a_clean_stop(life: dict[str, Any]) -> None:
    node = life["stopped"]["node"]
    assert (node["status"], node["ip"], node["watcher_port"]) == (None, None, None), node


@pytest.mark.parametrize("backend", ["etcd_sd", "redis_sd"])
def test_service_discovery_record_gone_after_a_clean_stop(life: dict[str, Any],
                                                          backend: str) -> None:
    records = life["stopped"][backend]
    # discover() raises "No service groups found." when nothing is registered at all
    if isinstance(records, dict):
        assert records["error"] == "ValueError: No service groups found.", records
    else:
        ids = {r["id"] for r in own_records(life["running"][backend], life["agent_id"])}
        assert not [r for r in records if r["id"] in ids], records
