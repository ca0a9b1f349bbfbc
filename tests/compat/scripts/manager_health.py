"""health as the manager checks an agent: AgentClient.health() (the v3 method health_v2, the
reply validated into HealthResp) and the manager's AgentRpcHealthChecker verdict."""

from __future__ import annotations

from typing import Any

from ai.backend.manager.health.rpc import AgentRpcHealthChecker
from harness import agent_client, main


async def body() -> dict[str, Any]:
    async with agent_client() as client:
        resp = await client.health()
        verdict = await AgentRpcHealthChecker(client).check_service()
    return {
        "health": resp.model_dump(mode="json"),
        "checker": {
            str(component): {"is_healthy": status.is_healthy, "error": status.error_message}
            for component, status in verdict.results.items()
        },
    }


if __name__ == "__main__":
    main(body)
