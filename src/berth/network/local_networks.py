"""Agent-local networks: one Docker bridge per multi-kernel single-node session.

The Manager names the network (``bai-singlenode-{session_id}``) and asks for it before it
creates the session's kernels (``create_local_network``), and to remove it once they are gone
(``destroy_local_network``, retried every scheduler tick until it succeeds). Both are
idempotent: creating a network this agent already made succeeds, destroying a missing one
succeeds. Networks carry the owner label with the agent id, so they can be told from anyone
else's; a network of the same name that is not ours is never adopted nor removed.
"""

from __future__ import annotations

import asyncio
import logging
import re
from collections.abc import Mapping
from typing import Protocol

from berth.backend import NetworkInfo
from berth.errors import BerthError, ContainerConflict, ContainerNotFound, InvalidArgument
from berth.types import OWNER_LABEL

__all__ = ["CLUSTER_NETWORK_LABEL", "LocalNetworks", "NetworkBackend", "check_network_name"]

log = logging.getLogger(__name__)

CLUSTER_NETWORK_LABEL = "ai.backend.cluster-network"  # Backend.AI's label on local bridges
# Docker's own rule for network names, bounded.
_NAME = re.compile(r"[a-zA-Z0-9][a-zA-Z0-9_.-]{0,127}")
_BUILTIN = frozenset({"bridge", "host", "none", "default"})


class NetworkBackend(Protocol):
    """The network verbs of the container seam (``DockerBackend`` and ``FakeBackend`` fit)."""

    async def network_create(self, name: str, *, labels: Mapping[str, str],
                             driver: str = "bridge") -> NetworkInfo: ...

    async def network_inspect(self, name: str) -> NetworkInfo | None: ...

    async def network_remove(self, name: str) -> None: ...

    async def network_list(self, labels: Mapping[str, str]) -> list[NetworkInfo]: ...


def check_network_name(name: str, *, field: str = "network_name") -> str:
    if not isinstance(name, str) or not _NAME.fullmatch(name) or name in _BUILTIN:
        raise InvalidArgument(f"{name!r} is not a usable network name", field=field)
    return name


class LocalNetworks:
    def __init__(self, backend: NetworkBackend, agent_id: str) -> None:
        self._backend = backend
        self.agent_id = agent_id
        self._lock = asyncio.Lock()  # one create/destroy at a time: no check-then-act races

    def is_ours(self, network: NetworkInfo) -> bool:
        return network.labels.get(OWNER_LABEL) == self.agent_id

    async def create(self, name: str) -> NetworkInfo:
        """A bridge network named ``name``; an existing one of this agent is returned as is."""
        check_network_name(name)
        async with self._lock:
            for _ in range(2):
                try:
                    network = await self._backend.network_create(
                        name, labels={OWNER_LABEL: self.agent_id, CLUSTER_NETWORK_LABEL: "1"})
                except ContainerConflict:
                    existing = await self._backend.network_inspect(name)
                    if existing is None:
                        continue  # removed in between: try once more
                    if not self.is_ours(existing):
                        raise ContainerConflict(
                            f"network {name} already exists and is not this agent's",
                            network=name) from None
                    log.info("local network %s already exists; reusing it", name)
                    return existing
                log.info("created local network %s (%s)", name, network.id[:12])
                return network
            raise ContainerConflict(f"network {name} keeps appearing and vanishing",
                                    network=name)

    async def destroy(self, name: str) -> bool:
        """Remove this agent's network ``name``; True when it was removed here.

        A missing network is success (the Manager retries a failed destroy forever); a network
        of that name that is not ours is left alone. A network that still has containers on it
        raises the engine's error, so the Manager retries once its kernels are gone.
        """
        check_network_name(name, field="network_ref_name")
        async with self._lock:
            existing = await self._backend.network_inspect(name)
            if existing is None:
                log.info("local network %s is already gone", name)
                return False
            if not self.is_ours(existing):
                log.warning("network %s is not this agent's; leaving it", name)
                return False
            try:
                await self._backend.network_remove(existing.id)
            except ContainerNotFound:
                return False
            log.info("removed local network %s", name)
            return True

    async def remove_strays(self) -> list[str]:
        """At start, before any RPC: remove this agent's session networks that no container
        uses (their session ended while the agent was down). Docker's default address pools
        hold only a few dozen bridges, so leaks would soon stop new sessions."""
        removed = []
        async with self._lock:
            for network in await self._backend.network_list(
                    {OWNER_LABEL: self.agent_id, CLUSTER_NETWORK_LABEL: "1"}):
                if network.containers:
                    continue
                try:
                    await self._backend.network_remove(network.id)
                except ContainerNotFound:
                    continue
                except BerthError as exc:  # a container joined meanwhile: not a stray
                    log.warning("could not remove stray network %s: %s", network.name, exc)
                    continue
                log.warning("removed stray local network %s (no container uses it)",
                            network.name)
                removed.append(network.name)
        return removed
