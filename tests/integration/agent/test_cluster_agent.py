"""A real agent process over RPC, called the way the manager calls it: a session network, a
two-kernel session on it, and a commit of its main kernel, then everything removed again."""

from __future__ import annotations

import json
import subprocess
import uuid

from support.docker import docker

from .conftest import PYTHON, AgentFactory, eventually, kernel_config


def network_exists(name: str) -> bool:
    return subprocess.run(["docker", "network", "inspect", name], check=False,
                          capture_output=True).returncode == 0


async def test_session_network_kernels_and_commit_over_rpc(agent_factory: AgentFactory) -> None:
    agent = await agent_factory()
    session = str(uuid.uuid4())
    net = f"bai-singlenode-{session}"
    main, sub = str(uuid.uuid4()), str(uuid.uuid4())
    tag = f"berth-test/rpc-commit-{uuid.uuid4().hex[:8]}:v1"
    configs = [{**kernel_config(PYTHON), "cluster_role": role, "cluster_idx": 1,
                "cluster_hostname": f"{role}1", "local_rank": rank}
               for role, rank in (("main", 0), ("sub", 1))]
    cluster = {"mode": "single-node", "size": 2, "replicas": {"main": 1, "sub": 1},
               "network_config": {"mode": "bridge", "network_name": net},
               "ssh_keypair": {"public_key": "ssh-rsa AAAA k", "private_key": "PRIVATE\n"},
               "cluster_ssh_port_mapping": None}
    try:
        async with agent.client() as c:
            assert await c.call("create_local_network", net, agent_id=agent.agent_id) is None
            await c.create_kernels(session, [main, sub], configs, cluster)
            status = {k["kernel_id"]: k for k in (await c.get_status())["kernels"]}
        main_cid = status[main]["container_id"]
        sub_ip = docker("inspect", "-f",
                        f'{{{{(index .NetworkSettings.Networks "{net}").IPAddress}}}}',
                        status[sub]["container_id"])
        resolved = docker("exec", main_cid, "python3", "-c",
                          "import socket; print(socket.gethostbyname('sub1'))")
        assert resolved == sub_ip != ""

        async with agent.client() as c:
            reply = await c.call("commit", main, "user_example.com", canonical=tag,
                                 extra_labels={"ai.backend.customized-image.name": "rpc"},
                                 agent_id=agent.agent_id)
            assert uuid.UUID(reply["bgtask_id"])

            async def committed() -> bool:
                state = await c.call("get_commit_status", main, "user_example.com")
                return bool(state["status"] == "ready")
            await eventually(committed, timeout=60, what="commit finished")
        labels = json.loads(docker("image", "inspect", "-f", "{{json .Config.Labels}}", tag))
        assert labels["ai.backend.customized-image.name"] == "rpc"

        async with agent.client() as c:
            for kid in (main, sub):
                await c.destroy_kernel(kid, session)
            await c.call("destroy_local_network", net, agent_id=agent.agent_id)
            assert not network_exists(net)
            await c.call("destroy_local_network", net, agent_id=agent.agent_id)  # a retry
    finally:
        docker("network", "rm", net, check=False)
        docker("rmi", "-f", tag, check=False)
