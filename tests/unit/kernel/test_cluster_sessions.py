"""Multi-kernel sessions through create_kernels: shared network, cluster env, SSH keys, and
kernels created side by side so one failure does not silence the others."""

from __future__ import annotations

import asyncio
import json
import stat
from typing import Any

import pytest
from support.facade import facade_over as build_facade

from berth.daemon.facade import AgentFacade
from berth.errors import ImageNotAvailable, InvalidKernelSpec
from berth.kernel.cluster import ClusterSpec
from berth.kernel.spec import parse_kernel_spec
from berth.network.local_networks import LocalNetworks
from berth.types import KernelState

from .harness import AGENT_ID, PY_IMAGE, Harness, kernel_config, new_id

NET = "bai-singlenode-0d7c8c1e-93a4-4b39-8a3c-2f1f6c1a9e55"
KEYS = {"public_key": "ssh-rsa AAAAB3Nza test@cluster",
        "private_key": "-----BEGIN OPENSSH PRIVATE KEY-----\nabc\n-----END OPENSSH PRIVATE KEY-----"}


def facade_over(h: Harness) -> AgentFacade:
    return build_facade(AGENT_ID, lifecycle=h.lc,
                                networks=LocalNetworks(h.backend, AGENT_ID))


def cluster_info(**over: Any) -> dict[str, Any]:
    info: dict[str, Any] = {"mode": "single-node", "size": 2, "replicas": {"main": 1, "sub": 1},
                            "network_config": {"mode": "bridge", "network_name": NET},
                            "ssh_keypair": KEYS, "cluster_ssh_port_mapping": None}
    info.update(over)
    return info


def member(role: str, idx: int, rank: int, **extra: Any) -> dict[str, Any]:
    config: dict[str, Any] = kernel_config(
        cluster_role=role, cluster_idx=idx, cluster_hostname=f"{role}{idx}", local_rank=rank,
        uid=4242, main_gid=4242, **extra)
    return config


def env_of(config: dict[str, Any]) -> dict[str, str]:
    return dict(item.split("=", 1) for item in config["Env"])


async def test_two_kernels_share_the_session_network_env_and_keys(h: Harness) -> None:
    facade = facade_over(h)
    await facade.create_local_network(NET)
    main, sub = new_id(), new_id()
    results = await facade.create_kernels(
        "sess-1", [main, sub], [member("main", 1, 0), member("sub", 1, 1)], cluster_info(), {})
    assert [r["id"] for r in results] == [main, sub]  # the reply keeps the call's order
    network = await h.backend.network_inspect(NET)
    assert network is not None
    for kid, host, rank in ((main, "main1", "0"), (sub, "sub1", "1")):
        container = h.backend.containers[h.container_id(kid)]
        assert container.config["Hostname"] == host
        assert container.config["HostConfig"]["NetworkMode"] == NET
        assert container.config["NetworkingConfig"] == {"EndpointsConfig": {
            NET: {"Aliases": [host]}}}
        assert container.networks == {network.id: [host]}
        env = env_of(container.config)
        assert env["BACKENDAI_CLUSTER_HOST"] == host
        assert env["BACKENDAI_CLUSTER_HOSTS"] == "main1,sub1"
        assert env["BACKENDAI_CLUSTER_SIZE"] == "2"
        assert env["BACKENDAI_CLUSTER_REPLICAS"] == "main:1,sub:1"
        assert env["BACKENDAI_CLUSTER_MODE"] == "single-node"
        assert env["BACKENDAI_CLUSTER_LOCAL_RANK"] == rank
        assert env["BACKENDAI_CLUSTER_ROLE"] == host[:-1]
        assert env["BACKENDAI_CLUSTER_IDX"] == "1"
        ssh = h.scratch.root / kid / "config" / "ssh"
        private, public = (ssh / "id_cluster").stat(), (ssh / "id_cluster.pub").stat()
        assert stat.S_IMODE(private.st_mode) == 0o600
        assert (private.st_uid, private.st_gid) == (4242, 4242)
        assert stat.S_IMODE(public.st_mode) == 0o644 and public.st_uid == 4242
        assert (ssh / "id_cluster").read_text() == KEYS["private_key"] + "\n"
        assert (ssh / "id_cluster.pub").read_text() == KEYS["public_key"] + "\n"
        environ_txt = (h.scratch.root / kid / "config" / "environ.txt").read_text()
        assert f"BACKENDAI_CLUSTER_HOST={host}\n" in environ_txt
        # the private key stays out of the ledger (and so out of status replies)
        entry = h.ledger.read(kid)
        assert entry is not None and "PRIVATE KEY" not in json.dumps(entry.spec)
    # the kernels hold the network; it goes once they are gone
    await facade.destroy_kernel(main, "sess-1")
    await facade.destroy_kernel(sub, "sess-1")
    await facade.destroy_local_network(NET)
    assert await h.backend.network_inspect(NET) is None


async def test_the_managers_cluster_env_wins_over_the_derived_defaults(h: Harness) -> None:
    facade = facade_over(h)
    kid = new_id()
    environ = {"BACKENDAI_CLUSTER_HOSTS": "main1,sub1,sub2", "BACKENDAI_CLUSTER_SIZE": "3"}
    await facade.create_kernels("s", [kid], [member("main", 1, 0, environ=environ)],
                                cluster_info(network_config={}, ssh_keypair=None), {})
    config = h.backend.containers[h.container_id(kid)].config
    env = env_of(config)
    assert env["BACKENDAI_CLUSTER_HOSTS"] == "main1,sub1,sub2"
    assert env["BACKENDAI_CLUSTER_SIZE"] == "3"
    assert "NetworkMode" not in config["HostConfig"] and "NetworkingConfig" not in config
    assert not (h.scratch.root / kid / "config" / "ssh").exists()


async def test_a_lone_kernel_is_its_own_cluster(h: Harness) -> None:
    kid = await h.create()
    env = env_of(h.backend.containers[h.container_id(kid)].config)
    assert (env["BACKENDAI_CLUSTER_SIZE"], env["BACKENDAI_CLUSTER_HOSTS"],
            env["BACKENDAI_CLUSTER_REPLICAS"]) == ("1", "main1", "main:1")


async def test_kernels_of_one_call_are_created_side_by_side(h: Harness) -> None:
    h.runners.mode = "gate"  # every runner waits until the gate opens
    facade = facade_over(h)
    ids = [new_id() for _ in range(3)]
    call = asyncio.create_task(facade.create_kernels(
        "s", ids, [member("sub", i + 1, i, image=PY_IMAGE) for i in range(3)],
        cluster_info(network_config={}, size=3, replicas={"sub": 3}), {}))
    for _ in range(200):
        if len(h.runners.made) == 3:
            break
        await asyncio.sleep(0.01)
    assert len(h.runners.made) == 3, "kernels were created one after another"
    h.runners.gate.set()
    results = await call
    assert [r["id"] for r in results] == ids


async def test_one_failing_kernel_leaves_the_others_created_and_reported(h: Harness) -> None:
    facade = facade_over(h)
    good1, bad, good2 = new_id(), new_id(), new_id()
    configs = [member("main", 1, 0), member("sub", 1, 1, image="berth/none:latest"),
               member("sub", 2, 2)]
    with pytest.raises(ImageNotAvailable):
        await facade.create_kernels("s", [good1, bad, good2], configs,
                                    cluster_info(network_config={}, size=3), {})
    for kid in (good1, good2):
        assert h.registry.get(kid).state == KernelState.RUNNING
        assert h.sink.names(kid) == ["kernel_preparing", "kernel_creating", "kernel_started"]
    assert h.sink.names(bad) == ["kernel_preparing", "kernel_terminated"]


def test_cluster_info_is_validated_where_the_spec_is() -> None:
    spec = parse_kernel_spec(kernel_config(cluster_info={"mode": "SINGLE_NODE", "size": 1}))
    assert spec.cluster_info.mode == "single-node" and spec.cluster_info.network_name is None
    for bad in ({"network_config": {"mode": "host"}},
                {"network_config": {"mode": "overlay", "network_name": "x"}},
                {"network_config": {"mode": "bridge", "network_name": "../x"}},
                {"mode": "galaxy"}, {"size": 0}):
        with pytest.raises(InvalidKernelSpec) as info:
            parse_kernel_spec(kernel_config(cluster_info=bad))
        assert info.value.field.startswith("cluster_info")
    assert ClusterSpec().network_name is None
