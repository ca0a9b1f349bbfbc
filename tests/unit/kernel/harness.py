"""A KernelLifecycle on in-memory roles: FakeBackend, real scratch (hostdir), ports, resources."""

from __future__ import annotations

import asyncio
import os
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path
from typing import Any

from berth.backend import FakeBackend
from berth.daemon.adapters import MountAdapter, ResourceAdapter
from berth.kernel.deps import TLSProxyRole
from berth.kernel.ledger import Ledger
from berth.kernel.lifecycle import KernelLifecycle, LifecycleSettings
from berth.kernel.reconcile import Reconciler
from berth.kernel.registry import KernelRegistry
from berth.network.ports import PortPool
from berth.plugins.cpu import CPUPlugin
from berth.plugins.mem import MemoryPlugin
from berth.resources import ResourceManager
from berth.resources.plugin import ComputePlugin
from berth.runner.kernel_side.protocol import READY_FIFO
from berth.storage import ScratchManager
from berth.types import KernelState, SlotName

AGENT_ID = "ag-unit"
IDLE_IMAGE = "berth/busybox:latest"
PY_IMAGE = "berth/python:3.11"
IDLE_LABELS = {"ai.backend.runtime-type": "app", "ai.backend.service-ports": "web:http:8080"}
PY_LABELS = {"ai.backend.runtime-type": "python", "ai.backend.runtime-path": "/usr/bin/python3"}
PORT_RANGE = (30000, 30009)
GIB = 1 << 30


@dataclass
class Emitted:
    name: str
    payload: dict[str, Any]
    state: KernelState | None  # the kernel's state when the event was emitted
    broadcast: bool


class RecordingSink:
    def __init__(self, registry: KernelRegistry) -> None:
        self.registry = registry
        self.events: list[Emitted] = []

    def emit(self, name: str, payload: Mapping[str, Any], *, broadcast: bool = False) -> None:
        kernel = self.registry.find(str(payload.get("kernel_id")))
        self.events.append(Emitted(name, dict(payload), kernel.state if kernel else None,
                                   broadcast))

    def of(self, kernel_id: str) -> list[Emitted]:
        return [e for e in self.events if e.payload.get("kernel_id") == kernel_id]

    def names(self, kernel_id: str) -> list[str]:
        return [e.name for e in self.of(kernel_id)]


class FakeRunner:
    """A runner as the lifecycle sees it: ``probe_ready`` answers as the mode says, and a
    ready runner writes the kernel's ready FIFO as krunner does (``signal``)."""

    def __init__(self, factory: FakeRunnerFactory, socket_path: Path) -> None:
        self.factory = factory
        self.socket_path = socket_path
        self.closed = False
        self.probes = 0
        self._signaller: asyncio.Task[None] | None = None
        if factory.mode == "ready":
            self.signal()
        elif factory.mode == "gate":
            self._signaller = asyncio.get_running_loop().create_task(self._signal_at_gate())

    @property
    def ready_fifo(self) -> Path:
        return self.socket_path.parent.parent / "ipc" / READY_FIFO

    def signal(self) -> None:
        """What krunner's _tell_ready does: a byte into the FIFO the agent holds open (no
        FIFO there, or no reader: nothing)."""
        try:
            fd = os.open(self.ready_fifo, os.O_WRONLY | os.O_NONBLOCK | os.O_NOFOLLOW)
        except OSError:
            return
        try:
            os.write(fd, b"r")
        finally:
            os.close(fd)

    async def _signal_at_gate(self) -> None:
        await self.factory.gate.wait()
        self.signal()

    async def probe_ready(self) -> bool:
        self.probes += 1
        mode = self.factory.mode
        return mode == "ready" or (mode == "gate" and self.factory.gate.is_set())

    async def close(self) -> None:
        self.closed = True
        if self._signaller is not None:
            self._signaller.cancel()


@dataclass
class FakeRunnerFactory:
    mode: str = "ready"  # ready | never | refused | gate
    gate: asyncio.Event = field(default_factory=asyncio.Event)
    made: list[FakeRunner] = field(default_factory=list)

    def __call__(self, socket_path: Path) -> FakeRunner:
        runner = FakeRunner(self, socket_path)
        self.made.append(runner)
        return runner


class FakeTLSProxy:
    def __init__(self) -> None:
        self.routes: dict[str, tuple[str, int, str, int]] = {}

    async def add(self, name: str, listen_host: str, listen_port: int, target_host: str,
                  target_port: int) -> int:
        self.routes[name] = (listen_host, listen_port, target_host, target_port)
        return listen_port

    async def remove(self, name: str) -> bool:
        return self.routes.pop(name, None) is not None


@dataclass
class Harness:
    root: Path
    lc: KernelLifecycle
    backend: FakeBackend
    registry: KernelRegistry
    manager: ResourceManager
    ports: PortPool
    scratch: ScratchManager
    sink: RecordingSink
    runners: FakeRunnerFactory

    @property
    def ledger(self) -> Ledger:
        return self.lc.ledger

    def reconciler(self) -> Reconciler:
        return Reconciler(self.lc, AGENT_ID)

    async def create(self, kernel_id: str | None = None, **config: Any) -> str:
        kid = kernel_id or new_id()
        await self.lc.create(kernel_config(**config), kid, f"sess-{kid}")
        return kid

    def container_id(self, kernel_id: str) -> str:
        cid = self.registry.get(kernel_id).container_id
        assert cid is not None
        return cid

    def assert_released(self, kernel_id: str) -> None:
        """Everything a kernel held is back: ports, slots, scratch, containers, registry."""
        assert self.ports.free_count == PORT_RANGE[1] - PORT_RANGE[0] + 1
        assert self.manager.get(kernel_id) is None  # type: ignore[arg-type]
        assert not (self.scratch.root / kernel_id).exists()
        assert not [c for c in self.backend.containers.values()
                    if c.labels.get("ai.backend.kernel-id") == kernel_id]
        assert self.registry.find(kernel_id) is None
        assert kernel_id not in self.lc.runners and kernel_id not in self.lc.layouts


def new_id() -> str:
    return str(uuid.uuid4())


def kernel_config(image: str = IDLE_IMAGE, is_local: bool = True, **extra: Any) -> dict[str, Any]:
    config: dict[str, Any] = {
        "image": {"canonical": image, "is_local": is_local},
        "resource_slots": {"cpu": "1", "mem": "256m"},
    }
    config.update(extra)
    return config


async def resource_manager(root: Path) -> ResourceManager:
    node = root / "sys/devices/system/node/node0"
    node.mkdir(parents=True, exist_ok=True)
    (node / "cpulist").write_text("0-3\n")
    (root / "proc").mkdir(exist_ok=True)
    (root / "proc/meminfo").write_text(f"MemTotal: {4 * GIB // 1024} kB\n")
    plugins: list[ComputePlugin] = [CPUPlugin({"sys_root": root / "sys", "cores": [0, 1, 2, 3]}),
               MemoryPlugin({"proc_root": root / "proc"})]
    for plugin in plugins:
        await plugin.init()
    return ResourceManager(plugins, reserved={SlotName("cpu"): Decimal(0),
                                              SlotName("mem"): Decimal(0)})


def settings(root: Path, **overrides: Any) -> LifecycleSettings:
    values: dict[str, Any] = {
        "agent_id": AGENT_ID, "bind_host": "127.0.0.1", "kernel_host": "127.0.0.1",
        "default_uid": os.getuid(), "default_gid": os.getgid(), "pids_limit": 64,
        "nofile_limit": 1024, "stop_grace": 1.0, "preparing_timeout": 2.0,
        "pull_timeout": 2.0, "creating_timeout": 2.0, "terminating_timeout": 2.0,
        "creation_concurrency": 4, "runner_dir": root / "runner",
    }
    values.update(overrides)
    return LifecycleSettings(**values)


async def build(root: Path, backend: FakeBackend | None = None, *,
                tls_proxy: TLSProxyRole | None = None, **overrides: Any) -> Harness:
    """A fresh agent's lifecycle over ``root``; pass the same backend to model a restart."""
    (root / "runner").mkdir(parents=True, exist_ok=True)
    (root / "vfolders").mkdir(exist_ok=True)
    if backend is None:
        backend = FakeBackend()
        backend.add_image(IDLE_IMAGE, labels=IDLE_LABELS)
        backend.add_image(PY_IMAGE, labels=PY_LABELS)
    registry = KernelRegistry()
    manager = await resource_manager(root / "host")
    ports = PortPool(*PORT_RANGE, cooldown=0)
    scratch = ScratchManager(root / "scratch", "hostdir", 0)
    sink = RecordingSink(registry)
    runners = FakeRunnerFactory()
    overrides.setdefault("slot_types", manager.slot_types())  # as the agent builds it
    lc = KernelLifecycle(
        settings(root, **overrides), backend=backend, registry=registry,
        ledger=Ledger(scratch.root), resources=ResourceAdapter(manager), ports=ports,
        scratch=scratch,
        mounts=MountAdapter([root / "vfolders"], root / "runner"),
        runner_factory=runners, events=sink, tls_proxy=tls_proxy,
    )
    return Harness(root, lc, backend, registry, manager, ports, scratch, sink, runners)
