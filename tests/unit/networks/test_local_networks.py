"""Agent-local networks over the fake engine: labelled, idempotent both ways, never foreign."""

from __future__ import annotations

import pytest
from support.facade import facade_over

from berth.backend import FakeBackend
from berth.errors import BackendError, ContainerConflict, InvalidArgument
from berth.network.local_networks import CLUSTER_NETWORK_LABEL, LocalNetworks
from berth.rpc.handlers import HandlerRegistry
from berth.types import OWNER_LABEL

AGENT = "ag-net"
NAME = "bai-singlenode-5f0c2f3e-2d0b-4a8e-9d59-0c5a3c7f1e11"


@pytest.fixture
def backend() -> FakeBackend:
    b = FakeBackend()
    b.add_image("berth/busybox:latest")
    return b


async def test_create_makes_a_labelled_bridge_and_again_reuses_it(backend: FakeBackend) -> None:
    nets = LocalNetworks(backend, AGENT)
    first = await nets.create(NAME)
    assert first.name == NAME and first.driver == "bridge"
    assert first.labels == {OWNER_LABEL: AGENT, CLUSTER_NETWORK_LABEL: "1"}
    second = await nets.create(NAME)  # the Manager may retry a create that timed out
    assert second.id == first.id
    assert [n.name for n in backend.networks.values()] == [NAME]


async def test_a_foreign_network_of_that_name_is_neither_adopted_nor_removed(
        backend: FakeBackend) -> None:
    await backend.network_create(NAME, labels={OWNER_LABEL: "someone-else"})
    nets = LocalNetworks(backend, AGENT)
    with pytest.raises(ContainerConflict, match="not this agent's"):
        await nets.create(NAME)
    assert await nets.destroy(NAME) is False
    assert await backend.network_inspect(NAME) is not None


async def test_destroy_removes_then_is_idempotent(backend: FakeBackend) -> None:
    nets = LocalNetworks(backend, AGENT)
    await nets.create(NAME)
    assert await nets.destroy(NAME) is True
    assert await backend.network_inspect(NAME) is None
    assert await nets.destroy(NAME) is False  # gone already: success, no error
    assert await nets.destroy("bai-singlenode-never-made") is False


async def test_destroy_with_a_container_attached_fails_and_keeps_it(backend: FakeBackend) -> None:
    nets = LocalNetworks(backend, AGENT)
    await nets.create(NAME)
    cid = await backend.create("k1", {"Image": "berth/busybox:latest",
                                      "HostConfig": {"NetworkMode": NAME}})
    with pytest.raises(BackendError) as info:
        await nets.destroy(NAME)
    assert info.value.data.get("status") == 403
    assert await backend.network_inspect(NAME) is not None
    await backend.remove(cid)
    assert await nets.destroy(NAME) is True


@pytest.mark.parametrize("bad", ["", "bridge", "host", "-lead", "a/b", "a b", "x" * 200])
async def test_unusable_names_are_refused(backend: FakeBackend, bad: str) -> None:
    nets = LocalNetworks(backend, AGENT)
    with pytest.raises(InvalidArgument):
        await nets.create(bad)
    assert not backend.networks


async def test_rpc_methods_are_served(backend: FakeBackend) -> None:
    facade = facade_over(AGENT, networks=LocalNetworks(backend, AGENT))
    registry = HandlerRegistry(facade)
    assert {"create_local_network", "destroy_local_network"} <= registry.names
    await registry.prepare("create_local_network", [NAME], {"agent_id": AGENT}).run()
    assert await backend.network_inspect(NAME) is not None
    call = registry.prepare("destroy_local_network", [NAME], {"agent_id": AGENT})
    await call.run()
    await call.run()  # the Manager's retry after success
    assert await backend.network_inspect(NAME) is None


async def test_strays_are_empty_networks_of_this_agent_only(backend: FakeBackend) -> None:
    nets = LocalNetworks(backend, AGENT)
    await nets.create("bai-singlenode-stray")
    await nets.create("bai-singlenode-in-use")
    await backend.network_create("bai-singlenode-foreign",
                                 labels={OWNER_LABEL: "other", CLUSTER_NETWORK_LABEL: "1"})
    await backend.network_create("plain-of-ours", labels={OWNER_LABEL: AGENT})
    await backend.create("k1", {"Image": "berth/busybox:latest",
                                "HostConfig": {"NetworkMode": "bai-singlenode-in-use"}})
    assert await nets.remove_strays() == ["bai-singlenode-stray"]
    assert sorted(n.name for n in backend.networks.values()) == [
        "bai-singlenode-foreign", "bai-singlenode-in-use", "plain-of-ours"]
