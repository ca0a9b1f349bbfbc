"""create_local_network / destroy_local_network as the manager sends them: the launcher's
create for a multi-kernel single-node session and the terminator's destroy, each sent twice
(a retry must be harmless). Usage: manager_local_network.py create|destroy NAME."""

from __future__ import annotations

import sys
from typing import Any

from harness import agent_client, main


async def body() -> dict[str, Any]:
    action, name = sys.argv[1], sys.argv[2]
    async with agent_client() as client:
        for _ in range(2):
            if action == "create":
                await client.create_local_network(name)
            else:
                await client.destroy_local_network(name)
    return {action: name}


if __name__ == "__main__":
    main(body)
