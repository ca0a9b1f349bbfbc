"""gather_hwinfo as the manager's registry calls it (AgentClient.gather_hwinfo: the v3 method
gather_hwinfo_v2 with a `req` envelope, the reply validated into GatherHwinfoResp), then
adapted to the GraphQL `hardware_metadata` shape as gql_legacy/agent.py does."""

from __future__ import annotations

from typing import Any

from harness import agent_client, main


async def body() -> dict[str, Any]:
    async with agent_client() as client:
        resp = await client.gather_hwinfo()
    return {
        "devices": [device.model_dump(mode="json") for device in resp.devices],
        "hardware_metadata": {
            device.device_name: {
                "status": device.status.value,
                "status_info": device.status_info,
                "metadata": dict(device.metadata),
            }
            for device in resp.devices
        },
    }


if __name__ == "__main__":
    main(body)
