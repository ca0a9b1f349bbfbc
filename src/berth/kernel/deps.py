"""The roles the kernel lifecycle depends on, as Protocols (wired in :mod:`berth.daemon.agent`)."""

from __future__ import annotations

import os
from collections.abc import Collection, Mapping, Sequence
from collections.abc import Set as AbstractSet
from decimal import Decimal
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from berth.resources import KernelAllocation
from berth.types import KernelId, SlotName

if TYPE_CHECKING:
    from berth.kernel.registry import Kernel

__all__ = [
    "EventSink",
    "MountPlanner",
    "OomCounter",
    "PortRole",
    "ResourceRole",
    "RunnerFactory",
    "RunnerRole",
    "ScratchLayout",
    "ScratchRole",
    "TLSProxyRole",
    "WarmPoolRole",
]


class ResourceRole(Protocol):
    def allocate(self, kernel_id: KernelId, requested: Mapping[SlotName, Decimal],
                 opts: Mapping[str, Any]) -> KernelAllocation:
        """Take `requested`, already parsed by the node's slot types (the spec's)."""
        ...

    def restore(self, kernel_id: KernelId, allocation: KernelAllocation) -> None:
        """Hold again what the ledger says ``kernel_id`` holds (agent restart); a record
        naming another kernel is refused."""
        ...

    def free(self, kernel_id: KernelId) -> None: ...

    def container_args(self, allocation: KernelAllocation | None) -> dict[str, Any]:
        """The plugins' Docker fragment for ``allocation``; ``{}`` for none (a warm-pool
        member holds no allocation)."""
        ...


class PortRole(Protocol):
    def acquire_many(self, count: int) -> list[int]: ...

    def release(self, port: int) -> None: ...

    def discard(self, port: int) -> None: ...


class ScratchLayout(Protocol):
    @property
    def kernel_dir(self) -> Path: ...

    @property
    def config_dir(self) -> Path: ...

    @property
    def work_dir(self) -> Path: ...

    @property
    def ipc_dir(self) -> Path: ...

    @property
    def runner_socket(self) -> Path:
        """Host path of the runner's socket, in a directory the kernel cannot write once sealed."""
        ...


class ScratchRole(Protocol):
    async def create(self, kernel_id: KernelId, uid: int, gid: int) -> ScratchLayout: ...

    async def open(self, kernel_id: KernelId) -> ScratchLayout:
        """An existing scratch; raises StorageError when it is missing or incomplete."""
        ...

    async def remove(self, kernel_id: KernelId) -> None: ...

    def seal(self, kernel_id: KernelId) -> os.stat_result | None:
        """Take the runner socket's directory from the kernel user; what the socket is now."""
        ...

    def unseal(self, kernel_id: KernelId, uid: int, gid: int) -> None:
        """Drop the old socket and give its directory back, for a new container."""
        ...

    def scan(self) -> AbstractSet[KernelId]: ...


class MountPlanner(Protocol):
    def plan(self, layout: ScratchLayout, mounts: Sequence[Mapping[str, Any]]
             ) -> list[dict[str, Any]]: ...


class RunnerRole(Protocol):
    async def probe_ready(self) -> bool:
        """Ask the runner once whether it is ready; False while it cannot be reached."""
        ...

    async def close(self) -> None: ...


class RunnerFactory(Protocol):
    def __call__(self, socket_path: Path) -> RunnerRole: ...


class OomCounter(Protocol):
    async def oom_kills(self, container_id: str, pid: int) -> int | None:
        """The container's memory-cgroup oom_kill counter now; None once the cgroup is gone."""
        ...

    def last_oom_kills(self, container_id: str) -> int | None:
        """The counter at the last stats reading (kept a while after the cgroup is gone)."""
        ...


class EventSink(Protocol):
    def emit(self, name: str, payload: Mapping[str, Any], *, broadcast: bool = False) -> None: ...


class WarmPoolRole(Protocol):
    async def serve(self, kernel: Kernel) -> bool:
        """Make a warm-pool container this kernel (allocation and service port declarations
        made): True when it did; False when the create must go on cold, nothing of the pool's
        left on the kernel."""
        ...

    async def adopt_or_reap(self, claimed: Collection[str]) -> tuple[int, int]:
        """At start, after the kernels' reconcile (`claimed`: their containers): keep the
        pool's containers still wanted, remove the rest; (adopted, reaped)."""
        ...

    def start(self) -> None:
        """Keep the pool full in the background (nothing when it is off)."""
        ...

    async def close(self) -> None: ...


class TLSProxyRole(Protocol):
    async def add(self, name: str, listen_host: str, listen_port: int, target_host: str,
                  target_port: int) -> int: ...

    async def remove(self, name: str) -> bool: ...
