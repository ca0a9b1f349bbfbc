"""A node as the 26.9.6 manager reads it, with the manager's own classes: ``running`` or
``stopped`` (the first argument).

running: drain the stream as group ``manager`` (the test created the group before the agent
started, as a running manager has) and decode every entry; agent_started, service_registered
and an agent_heartbeat must be among them. The heartbeat's AgentInfo goes through
AgentHeartbeatUpsert.from_agent_info (what the handler upserts) and its addr/public_key into
an AgentRPCCache that the pool then pings (what the handler does with them); the installed
images are read with ValkeyImageClient.get_agent_installed_images from REDIS_IMAGE_DB;
service discovery through ETCDServiceDiscovery.discover() (the manager's AsyncEtcd) and
RedisServiceDiscovery.discover(); nodes/agents/{id}, its ip and watcher_port as
services/agent/service.py reads them.

stopped (after a clean stop): the same readers again, and the stream's new entries
(agent_terminated, service_deregistered) decoded.
"""

from __future__ import annotations

import sys
from datetime import UTC, datetime
from typing import Any

from ai.backend.common.clients.valkey_client.valkey_image.client import ValkeyImageClient
from ai.backend.common.defs import REDIS_IMAGE_DB
from ai.backend.common.etcd import AsyncEtcd, ConfigScopes
from ai.backend.common.service_discovery.etcd_discovery.service_discovery import (
    ETCDServiceDiscovery,
    ETCDServiceDiscoveryArgs,
)
from ai.backend.common.service_discovery.redis_discovery.service_discovery import (
    RedisServiceDiscovery,
    RedisServiceDiscoveryArgs,
)
from ai.backend.common.types import AgentId, HostPortPair
from harness import env, main
from mq import ManagerQueue, valkey_target
from zmq.auth.certs import load_certificate


def outcome(exc: BaseException) -> dict[str, Any]:
    return {"error": f"{type(exc).__name__}: {exc}"}


async def discover(agent: str) -> dict[str, Any]:
    """Both service-discovery backends' discover(), and the etcd node keys."""
    out: dict[str, Any] = {}
    host, port = env("BERTH_ETCD_ADDR").rsplit(":", 1)
    async with AsyncEtcd([HostPortPair(host, int(port))], env("BERTH_ETCD_NAMESPACE"),
                         {ConfigScopes.GLOBAL: ""}) as etcd:
        try:
            records = await ETCDServiceDiscovery(ETCDServiceDiscoveryArgs(etcd)).discover()
            out["etcd_sd"] = [r.model_dump(mode="json") for r in records]
        except Exception as exc:  # noqa: BLE001 - reported; the test judges it
            out["etcd_sd"] = outcome(exc)
        out["node"] = {
            "status": await etcd.get(f"nodes/agents/{agent}"),
            "ip": await etcd.get(f"nodes/agents/{agent}/ip"),
            "watcher_port": await etcd.get(f"nodes/agents/{agent}/watcher_port"),
        }
        raw_port = out["node"]["watcher_port"]
        try:  # services/agent/service.py: 6099 when missing, else int(...)
            out["node"]["watcher_port_as_read"] = 6099 if raw_port is None else int(raw_port)
        except ValueError as exc:
            out["node"]["watcher_port_as_read"] = outcome(exc)
    redis_sd = await RedisServiceDiscovery.create(RedisServiceDiscoveryArgs(valkey_target()))
    try:
        out["redis_sd"] = [r.model_dump(mode="json") for r in await redis_sd.discover()]
    except Exception as exc:  # noqa: BLE001 - reported; the test judges it
        out["redis_sd"] = outcome(exc)
    finally:
        await redis_sd.close()
    return out


async def reach_by_heartbeat(agent: str, addr: str, public_key: bytes | None) -> str:
    """The handler's agent_cache.update(source, addr, public_key); then the pool's ping."""
    from ai.backend.common.auth import PublicKey, SecretKey
    from ai.backend.manager.agent_cache import AgentRPCCache
    from ai.backend.manager.clients.agent.pool import AgentClientPool
    from ai.backend.manager.clients.agent.types import AgentPoolSpec

    manager_public, manager_secret = load_certificate(env("BERTH_MANAGER_KEYPAIR"))
    assert manager_secret is not None
    cache = AgentRPCCache(None, PublicKey(manager_public), SecretKey(manager_secret))  # type: ignore[arg-type]
    cache.update(AgentId(agent), addr, PublicKey(public_key) if public_key else None)
    pool = AgentClientPool(cache, AgentPoolSpec(health_check_interval=3600,
                                                failure_threshold=3, recovery_timeout=60))
    try:
        async with pool.acquire(AgentId(agent)) as client:
            return await client.ping()
    finally:
        await pool.close()


async def running() -> dict[str, Any]:
    # the manager's modules, only in this phase (they take seconds to import)
    from ai.backend.common.events.event_types.agent.anycast import AgentHeartbeatEvent
    from ai.backend.manager.data.agent.types import AgentHeartbeatUpsert

    agent = env("BERTH_AGENT_ID")
    out: dict[str, Any] = {}
    async with ManagerQueue() as mq:
        try:
            await mq.wait_for("agent_heartbeat", lambda: mq.anycast_named("agent_heartbeat"), 30)
        except TimeoutError as exc:
            out["heartbeat_wait"] = str(exc)
        await mq.drain()
        out["queue"] = mq.summary()
        beats = [e for e in mq.anycast if e.get("name") == "agent_heartbeat" and "error" not in e]
        if beats:
            # the decoded event again (mq keeps its JSON form), as the handler gets it
            event = AgentHeartbeatEvent.model_validate(beats[-1]["body"])
            info = event.agent_info
            upsert = AgentHeartbeatUpsert.from_agent_info(agent_id=AgentId(agent), agent_info=info,
                                                          heartbeat_received=datetime.now(UTC))
            out["upsert"] = {k: str(v) for k, v in upsert.insert_fields.items()}
            out["available_slots"] = {str(k): str(v) for k, v in
                                      upsert.resource_info.available_slots.items()}
            out["slot_types"] = {str(k): str(v) for k, v in
                                 upsert.resource_info.slot_key_and_units.items()}
            try:
                out["ping_by_heartbeat"] = await reach_by_heartbeat(agent, info.addr,
                                                                    info.public_key)
            except Exception as exc:  # noqa: BLE001 - reported; the test judges it
                out["ping_by_heartbeat"] = outcome(exc)
    images = await ValkeyImageClient.create(valkey_target(), db_id=REDIS_IMAGE_DB,
                                            human_readable_name="compat-image")
    try:
        out["installed_images"] = [i.model_dump(mode="json") for i in
                                   await images.get_agent_installed_images(AgentId(agent))]
    except Exception as exc:  # noqa: BLE001 - reported; the test judges it
        out["installed_images"] = outcome(exc)
    finally:
        await images.close()
    out.update(await discover(agent))
    return out


async def stopped() -> dict[str, Any]:
    agent = env("BERTH_AGENT_ID")
    out: dict[str, Any] = {}
    async with ManagerQueue() as mq:
        await mq.drain()
        out["queue"] = mq.summary()
    out.update(await discover(agent))
    return out


if __name__ == "__main__":
    phase = sys.argv[1] if len(sys.argv) > 1 else ""
    if phase not in {"running", "stopped"}:
        raise SystemExit("usage: manager_node.py running|stopped")
    main(running if phase == "running" else stopped, timeout=60)
