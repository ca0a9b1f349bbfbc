"""The manager's own client creates and destroys a session network on a real Berth agent."""

from __future__ import annotations

import json
import subprocess
import uuid

from support.docker import docker

from .conftest import CompatNode, RunInImage


def network_exists(name: str) -> bool:
    return subprocess.run(["docker", "network", "inspect", name], check=False,
                          capture_output=True).returncode == 0


def test_session_network_created_and_destroyed_as_the_manager_asks(
        run_in_image: RunInImage, compat_node: CompatNode) -> None:
    name = f"bai-singlenode-{uuid.uuid4()}"
    try:
        assert run_in_image("manager_local_network.py", "create", name) == {"create": name}
        labels = json.loads(docker("network", "inspect", "-f", "{{json .Labels}}", name))
        assert labels == {"ai.backend.owner": compat_node.agent.agent_id,
                          "ai.backend.cluster-network": "1"}
        assert run_in_image("manager_local_network.py", "destroy", name) == {"destroy": name}
        assert not network_exists(name)
    finally:
        docker("network", "rm", name, check=False)
