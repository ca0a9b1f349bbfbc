"""get_local_config as the manager's registry calls it (agent id passed positionally)."""

from __future__ import annotations

from typing import Any

from harness import agent_client, main


async def body() -> dict[str, Any]:
    async with agent_client() as client:
        config = await client.get_local_config()
    return {"type": type(config).__name__, "config": config}


if __name__ == "__main__":
    main(body)
