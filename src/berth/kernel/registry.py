"""The in-memory kernel registry: the agent's view of its kernels, guarded by one lock.

Never hold the lock across slow I/O (an agent that held its registry lock across Docker calls
stalled every RPC for 56 s while the engine was slow). Readers take a
:meth:`KernelRegistry.snapshot`, a list of frozen views stamped with the time they were taken, so
reconciliation can tell a kernel that changed after the snapshot from one that is really gone.
"""

from __future__ import annotations

import asyncio
import time
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Any

from berth.errors import KernelAlreadyExists, KernelNotFound
from berth.kernel.oom import OomWatch
from berth.kernel.service_ports import ServicePort, service_ports_to_wire
from berth.kernel.spec import KernelSpec
from berth.kernel.state import check_transition
from berth.resources import KernelAllocation
from berth.types import KernelId, KernelState, TerminationReason

__all__ = ["Kernel", "KernelRegistry", "KernelView", "Termination"]


@dataclass(frozen=True)
class Termination:
    reason: TerminationReason
    exit_code: int
    detail: str = ""
    at: float = 0.0


@dataclass
class Kernel:
    kernel_id: KernelId
    session_id: str
    spec: KernelSpec
    uid: int
    gid: int
    state: KernelState = KernelState.PREPARING
    state_since: float = field(default_factory=time.monotonic)
    created_at: float = field(default_factory=time.time)
    container_id: str | None = None
    pid: int = 0
    image_id: str | None = None
    image_labels: dict[str, str] = field(default_factory=dict)
    allocation: KernelAllocation | None = None  # kept after release: ended kernels show it
    host_ports: dict[str, list[int]] = field(default_factory=dict)
    tls_ports: dict[int, int] = field(default_factory=dict)  # container port → loopback port
    service_ports: tuple[ServicePort, ...] = ()  # declared services, their host ports held
    termination: Termination | None = None
    terminated: asyncio.Event = field(default_factory=asyncio.Event)
    phase_durations: dict[str, float] = field(default_factory=dict)
    oom: OomWatch = field(default_factory=OomWatch)  # OOM kills of its current container
    auto_restarts: int = 0  # containers restarted by the restart policy (kernel's life)
    worker_exits_seen: int = 0  # the runner's count of code-worker deaths already handled
    # Set by a destroy (or any end) that cancelled the create or restart under way: the
    # reason and detail that create's or restart's rollback ends the kernel with.
    doomed: tuple[TerminationReason, str] | None = None

    def transition(self, target: KernelState) -> None:
        check_transition(self.kernel_id, self.state, target)
        self.state = target
        self.state_since = time.monotonic()

    def tls_host_ports(self) -> tuple[int, ...]:
        """Host ports the agent serves over TLS (the service's host port of each container port
        with a TLS route)."""
        return tuple(hp for decl in self.service_ports for cp, hp in decl.pairs()
                     if cp in self.tls_ports)

    def view(self) -> KernelView:
        return KernelView(
            kernel_id=self.kernel_id, session_id=self.session_id, state=self.state,
            state_since=self.state_since, created_at=self.created_at,
            container_id=self.container_id, pid=self.pid, image=self.spec.image.canonical,
            resource_slots={k: str(v) for k, v in self.spec.resource_slots.items()},
            allocation=self.allocation, host_ports=dict(self.host_ports),
            service_ports=self.service_ports, termination=self.termination,
            tls_host_ports=self.tls_host_ports(), owner_user_id=self.spec.owner_user_id, owner_project_id=self.spec.owner_project_id,
        )


@dataclass(frozen=True)
class KernelView:
    kernel_id: KernelId
    session_id: str
    state: KernelState
    state_since: float
    created_at: float
    container_id: str | None
    pid: int
    image: str
    resource_slots: dict[str, str]
    allocation: KernelAllocation | None
    host_ports: dict[str, list[int]]
    service_ports: tuple[ServicePort, ...]
    termination: Termination | None
    owner_user_id: str | None = None
    owner_project_id: str | None = None
    tls_host_ports: tuple[int, ...] = ()

    def to_json(self) -> dict[str, Any]:
        data: dict[str, Any] = {
            "kernel_id": self.kernel_id, "session_id": self.session_id,
            "state": str(self.state), "image": self.image, "container_id": self.container_id,
            "resource_slots": self.resource_slots, "allocation": self.allocation.to_json() if self.allocation is not None else {},
            "host_ports": self.host_ports, "service_ports": service_ports_to_wire(self.service_ports),
            "tls_host_ports": list(self.tls_host_ports),
            "created_at": self.created_at, "age": round(time.time() - self.created_at, 3),
        }
        if self.termination is not None:
            data["termination"] = {"reason": str(self.termination.reason),
                                   "exit_code": self.termination.exit_code,
                                   "detail": self.termination.detail}
        return data


class KernelRegistry:
    def __init__(self, keep_terminated: int = 256) -> None:
        self.lock = asyncio.Lock()
        self._kernels: dict[str, Kernel] = {}
        self._terminated: OrderedDict[str, KernelView] = OrderedDict()
        self._keep = keep_terminated

    def add(self, kernel: Kernel) -> None:
        if kernel.kernel_id in self._kernels:
            raise KernelAlreadyExists(kernel_id=kernel.kernel_id)
        self._terminated.pop(kernel.kernel_id, None)
        self._kernels[kernel.kernel_id] = kernel

    def get(self, kernel_id: KernelId) -> Kernel:
        try:
            return self._kernels[kernel_id]
        except KeyError:
            raise KernelNotFound(kernel_id=kernel_id) from None

    def find(self, kernel_id: KernelId) -> Kernel | None:
        return self._kernels.get(kernel_id)

    def by_container(self, container_id: str) -> Kernel | None:
        for kernel in self._kernels.values():
            if kernel.container_id == container_id:
                return kernel
        return None

    def retire(self, kernel: Kernel) -> None:
        """Move a TERMINATED kernel to the bounded history of ended kernels."""
        self._kernels.pop(kernel.kernel_id, None)
        self._terminated[kernel.kernel_id] = kernel.view()
        while len(self._terminated) > self._keep:
            self._terminated.popitem(last=False)

    def ended(self, kernel_id: KernelId) -> KernelView | None:
        return self._terminated.get(kernel_id)

    def snapshot(self) -> tuple[float, list[KernelView]]:
        return time.monotonic(), [k.view() for k in self._kernels.values()]

    def live(self) -> list[Kernel]:
        return list(self._kernels.values())

    def __len__(self) -> int:
        return len(self._kernels)
