"""ping as the manager sends it: `mgr agent ping` through AgentRPCCache.rpc_context
(ping("pong")), and the pool's connection check through AgentClient.ping() (ping("ping"))."""

from __future__ import annotations

from typing import Any

from harness import agent_cache, agent_client, agent_id, main


async def body() -> dict[str, Any]:
    async with agent_cache().rpc_context(agent_id(), invoke_timeout=20) as rpc:
        via_context = await rpc.call.ping("pong")
    async with agent_client() as client:
        via_pool = await client.ping()
    return {"rpc_context": via_context, "pool": via_pool}


if __name__ == "__main__":
    main(body)
