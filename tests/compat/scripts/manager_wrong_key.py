"""A manager whose key pair the agent does not know (BERTH_INTRUDER_KEYPAIR) calls ping through
AgentRPCCache.rpc_context, as `mgr agent ping` does. Reports how the manager's call ended."""

from __future__ import annotations

from typing import Any

from harness import agent_cache, agent_id, main


async def body() -> dict[str, Any]:
    try:
        async with agent_cache("BERTH_INTRUDER_KEYPAIR").rpc_context(
                agent_id(), invoke_timeout=5) as rpc:
            reply = await rpc.call.ping("pong")
    except Exception as exc:  # noqa: BLE001 - the test judges how it ended
        return {"answered": False, "error": type(exc).__name__, "detail": repr(exc)}
    return {"answered": True, "reply": reply}


if __name__ == "__main__":
    main(body, timeout=30)
