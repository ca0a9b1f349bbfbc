"""What every compat script shares: the node under test, and the manager's own RPC plumbing.

Runs inside berth/bai-compat (Backend.AI 26.9.6, Python 3.13), never on the host. The test
passes the node through BERTH_* variables (tests/compat/conftest.py, CompatNode.script_env);
key files are mounted read-only under /keys. A script prints its result as one JSON object
on its last stdout line (emit); anything it raises ends it non-zero with the traceback on
stderr, which fails the test with that traceback.

The agent client is built exactly as the manager builds it: the manager's keypair read with
zmq's load_certificate (AgentCacheDependency), an AgentRPCCache that knows the agent's
address and public key (what the manager reads from its agents table), and AgentClientPool
creating the AgentClient over a PeerInvoker with ManagerAuthHandler("local", ...).
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import TYPE_CHECKING, Any

from zmq.auth.certs import load_certificate

if TYPE_CHECKING:
    from ai.backend.common.clients.agent.client import AgentClient
    from ai.backend.common.types import AgentId
    from ai.backend.manager.agent_cache import AgentRPCCache

# The manager's client modules are imported where they are used: importing them takes
# seconds, and scripts that only read Redis and etcd do without.


def env(name: str) -> str:
    value = os.environ.get(name)
    if not value:
        raise SystemExit(f"{name} is not set (run this script through tests/compat run_in_image)")
    return value


def agent_id() -> AgentId:
    from ai.backend.common.types import AgentId

    return AgentId(env("BERTH_AGENT_ID"))


def agent_cache(keypair_env: str = "BERTH_MANAGER_KEYPAIR") -> AgentRPCCache:
    """The manager's AgentRPCCache, told the agent's address and public key (no database:
    the manager only reads its agents table when the cache does not know the agent)."""
    from ai.backend.common.auth import PublicKey, SecretKey
    from ai.backend.manager.agent_cache import AgentRPCCache

    manager_public, manager_secret = load_certificate(env(keypair_env))
    if manager_secret is None:
        raise SystemExit(f"{env(keypair_env)} holds no secret key")
    agent_public, _ = load_certificate(env("BERTH_AGENT_PUBLIC_KEY"))
    cache = AgentRPCCache(None, PublicKey(manager_public), SecretKey(manager_secret))  # type: ignore[arg-type]
    cache.update(agent_id(), env("BERTH_AGENT_ADDR"), PublicKey(agent_public))
    return cache


@asynccontextmanager
async def agent_client(keypair_env: str = "BERTH_MANAGER_KEYPAIR") -> AsyncIterator[AgentClient]:
    """The AgentClient the manager's registry acquires from its pool for this agent."""
    from ai.backend.manager.clients.agent.pool import AgentClientPool
    from ai.backend.manager.clients.agent.types import AgentPoolSpec

    pool = AgentClientPool(
        agent_cache(keypair_env),
        AgentPoolSpec(health_check_interval=3600, failure_threshold=3, recovery_timeout=60),
    )
    try:
        async with pool.acquire(agent_id()) as client:
            yield client
    finally:
        await pool.close()


def emit(result: dict[str, Any]) -> None:
    """The script's answer: one JSON object, the last line on stdout."""
    sys.stdout.flush()
    print(json.dumps(result, default=str), flush=True)


def main(body: Callable[[], Awaitable[dict[str, Any]]], timeout: float = 60) -> None:
    async def bounded() -> dict[str, Any]:
        async with asyncio.timeout(timeout):
            return await body()

    emit(asyncio.run(bounded()))
