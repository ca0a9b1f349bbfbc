"""Multi-kernel sessions and customised images on the real Docker engine.

A two-kernel session (main1 + sub1) on an agent-local bridge: each kernel reaches the other by
its cluster hostname, sees the cluster environment and has the session's SSH keypair; the
network goes once the session does. A running kernel is committed to an image carrying the
Manager's labels and exported to a file under the commit directory.
"""

from __future__ import annotations

import asyncio
import gzip
import io
import json
import subprocess
import tarfile
import uuid
from pathlib import Path
from typing import Any

import pytest
from support.docker import docker

from berth.daemon.agent import Agent
from berth.events.bgtask import TaskStatus
from berth.daemon.facade import AgentFacade

from .conftest import PYTHON, agent_config, assert_clean, exec_in, kernel_config

KEYS = {"public_key": "ssh-rsa AAAAB3NzaC1yc2EAAAADAQABAAABAQC7 berth@cluster",
        "private_key": "-----BEGIN OPENSSH PRIVATE KEY-----\n"
                       "b3BlbnNzaC1rZXktdjEAAAAABG5vbmUAAAAEbm9uZQ\n"
                       "-----END OPENSSH PRIVATE KEY-----\n"}
SERVER = """
import socket
s = socket.socket()
s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind(("0.0.0.0", 7777)); s.listen(1); s.settimeout(30)
conn, peer = s.accept()
conn.sendall(b"pong from " + socket.gethostname().encode()); conn.close()
"""
CLIENT = """
import socket, time
for _ in range(100):
    try:
        c = socket.create_connection(("sub1", 7777), timeout=2)
        break
    except OSError:
        time.sleep(0.1)
print(c.recv(100).decode())
print(socket.getaddrinfo("sub1", 7777)[0][4][0])
"""


def network_exists(name: str) -> bool:
    return subprocess.run(["docker", "network", "inspect", name], check=False,
                          capture_output=True).returncode == 0


def member(role: str, rank: int) -> dict[str, Any]:
    config: dict[str, Any] = kernel_config(PYTHON, cluster_role=role, cluster_idx=1,
                                           cluster_hostname=f"{role}1", local_rank=rank)
    return config


async def test_two_kernels_reach_each_other_on_the_session_network(
        agent: Agent, facade: AgentFacade) -> None:
    session = str(uuid.uuid4())
    net = f"bai-singlenode-{session}"
    main, sub = str(uuid.uuid4()), str(uuid.uuid4())
    cluster = {"mode": "single-node", "size": 2, "replicas": {"main": 1, "sub": 1},
               "network_config": {"mode": "bridge", "network_name": net},
               "ssh_keypair": KEYS, "cluster_ssh_port_mapping": None}
    try:
        await facade.create_local_network(net)
        await facade.create_local_network(net)  # the Manager's retry is harmless
        labels = json.loads(docker("network", "inspect", "-f", "{{json .Labels}}", net))
        assert labels == {"ai.backend.owner": agent.agent_id, "ai.backend.cluster-network": "1"}
        await facade.create_kernels(session, [main, sub], [member("main", 0), member("sub", 1)],
                                    cluster, {})
        server = asyncio.create_task(exec_in(agent, sub, "python3", "-c", SERVER))
        code, out = await exec_in(agent, main, "python3", "-c", CLIENT)
        assert code == 0, out
        reply, address = out.split()[-4:-1], out.split()[-1]
        assert " ".join(reply) == "pong from sub1", out
        assert (await server)[0] == 0
        sub_ip = docker("inspect", "-f",
                        f'{{{{(index .NetworkSettings.Networks "{net}").IPAddress}}}}',
                        agent.registry.get(sub).container_id or "")
        assert address == sub_ip
        code, out = await exec_in(agent, sub, "getent", "hosts", "main1")
        assert code == 0 and out.split()[0], out
        for kid, host, rank in ((main, "main1", "0"), (sub, "sub1", "1")):
            code, out = await exec_in(agent, kid, "sh", "-c", "env | grep ^BACKENDAI_CLUSTER_")
            env = dict(line.split("=", 1) for line in out.split())
            assert env == {
                "BACKENDAI_CLUSTER_HOST": host, "BACKENDAI_CLUSTER_HOSTS": "main1,sub1",
                "BACKENDAI_CLUSTER_SIZE": "2", "BACKENDAI_CLUSTER_REPLICAS": "main:1,sub:1",
                "BACKENDAI_CLUSTER_ROLE": host[:-1], "BACKENDAI_CLUSTER_IDX": "1",
                "BACKENDAI_CLUSTER_LOCAL_RANK": rank, "BACKENDAI_CLUSTER_MODE": "single-node",
            }, out
            code, out = await exec_in(agent, kid, "stat", "-c", "%a %u %n",
                                      "/home/config/ssh/id_cluster",
                                      "/home/config/ssh/id_cluster.pub")
            uid = agent.config.container.kernel_uid
            assert out.split("\n")[:2] == [f"600 {uid} /home/config/ssh/id_cluster",
                                           f"644 {uid} /home/config/ssh/id_cluster.pub"], out
            code, out = await exec_in(agent, kid, "cat", "/home/config/ssh/id_cluster")
            assert code == 0 and out == KEYS["private_key"]  # the kernel's user can read it
            code, out = await exec_in(agent, kid, "hostname")
            assert out.strip() == host
        # destroying the network while its kernels run fails (the Manager retries)...
        with pytest.raises(Exception, match="active endpoints"):
            await facade.destroy_local_network(net)
        await facade.destroy_kernel(main, session)
        await facade.destroy_kernel(sub, session)
        # ...and succeeds once they are gone, and again after that
        await facade.destroy_local_network(net)
        assert not network_exists(net)
        await facade.destroy_local_network(net)
    finally:
        for kid in (main, sub):
            if agent.registry.find(kid) is not None:
                await facade.destroy_kernel(kid, session)
        docker("network", "rm", net, check=False)


async def test_commit_makes_a_labelled_image_and_exports_it(agent: Agent,
                                                            facade: AgentFacade) -> None:
    kid = str(uuid.uuid4())
    tag = f"berth-test/commit-{uuid.uuid4().hex[:8]}:v1"
    tasks = agent.parts.link.tasks
    try:
        await facade.create_kernel(kid, kid, kernel_config())
        code, out = await exec_in(agent, kid, "sh", "-c", "echo made-in-kernel > /tmp/marker")
        assert code == 0, out
        reply = await facade.commit(kid, "user_example.com", canonical=tag, extra_labels={
            "ai.backend.customized-image.name": "my image $HOME",
            "ai.backend.customized-image.owner": "user:1234"})
        record = await tasks.wait(reply["bgtask_id"], 120)
        assert record.status is TaskStatus.DONE, record.message
        labels = json.loads(docker("image", "inspect", "-f", "{{json .Config.Labels}}", tag))
        assert labels["ai.backend.customized-image.name"] == "my image $HOME"
        assert labels["ai.backend.customized-image.owner"] == "user:1234"
        assert labels["ai.backend.owner"] == "" and labels["ai.backend.kernel-id"] == ""
        out = docker("run", "--rm", "--entrypoint", "/bin/cat", tag, "/tmp/marker")
        assert out == "made-in-kernel"

        filename = "2026-12-01T00H00M00S_sess_busybox-latest.tar.gz"
        reply = await facade.commit(kid, "user_example.com", filename=filename,
                                    canonical=agent.registry.get(kid).spec.image.canonical)
        record = await tasks.wait(reply["bgtask_id"], 120)
        assert record.status is TaskStatus.DONE, record.message
        path = agent.config.agent.image_commit_path / "user_example.com" / filename
        with tarfile.open(fileobj=io.BytesIO(gzip.decompress(path.read_bytes()))) as tar:
            assert "manifest.json" in tar.getnames()
        assert sorted(p.name for p in path.parent.iterdir()) == [filename]
        # the kernel's own image keeps its tag; the snapshot made for the file is gone
        base = json.loads(docker("image", "inspect", "-f", "{{json .Config.Labels}}",
                                 "berth/busybox:latest"))
        assert "ai.backend.customized-image.name" not in (base or {})
        with pytest.raises(Exception, match="filename"):
            await facade.commit(kid, "user_example.com", filename="../../escape.tar")
    finally:
        if agent.registry.find(kid) is not None:
            await facade.destroy_kernel(kid, kid)
        docker("rmi", "-f", tag, check=False)


async def test_an_agent_starting_removes_its_unused_session_networks(
        tmp_path: Path, agent_id: str) -> None:
    stray, foreign = (f"bai-singlenode-{uuid.uuid4()}" for _ in range(2))
    docker("network", "create", "--label", f"ai.backend.owner={agent_id}",
           "--label", "ai.backend.cluster-network=1", stray)
    docker("network", "create", "--label", "ai.backend.owner=someone-else",
           "--label", "ai.backend.cluster-network=1", foreign)
    agent = Agent(agent_config(tmp_path, agent_id))
    try:
        await agent.startup()
        assert not network_exists(stray)
        assert network_exists(foreign)
    finally:
        await agent.shutdown()
        docker("network", "rm", stray, check=False)
        docker("network", "rm", foreign, check=False)
        assert_clean(tmp_path / "scratch")
