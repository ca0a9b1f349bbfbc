"""The agent: the only wiring. ``startup()`` returns when the node is ready, ``serve()`` runs
until asked to stop, ``shutdown()`` leaves every kernel running for the next agent to adopt.

The RPC methods live on :class:`berth.facade.AgentFacade`; this module owns the parts.
"""

from __future__ import annotations

import asyncio
import logging
import platform
import resource
import time
from decimal import Decimal
from contextlib import AsyncExitStack
from pathlib import Path

from berth import __version__
from berth.adapters import EventAdapter, MountAdapter, ResourceAdapter
from berth.backend.base import ContainerBackend
from berth.backend.docker import DockerBackend
from berth.config import AgentConfig, parse_host_port
from berth.errors import BackendError
from berth.kernel.ledger import Ledger
from berth.kernel.lifecycle import KernelLifecycle, LifecycleSettings
from berth.kernel.reconcile import Reconciler
from berth.kernel.registry import KernelRegistry
from berth.plugins import load_plugins
from berth.ports import PortPool
from berth.resources.affinity import AffinityPolicy
from berth.resources.allocator import ResourceManager
from berth.storage import ScratchManager
from berth.tasks import TaskSupervisor
from berth.types import OWNER_LABEL, SlotName

__all__ = ["Agent"]


def _safe_nofile(wanted: int) -> int:
    """Containers cannot be given more open files than the agent's own hard limit."""
    hard = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
    return wanted if hard == resource.RLIM_INFINITY else min(wanted, hard)

log = logging.getLogger(__name__)

RUNNER_DIR = Path(__file__).parent / "runner"


class Agent:
    def __init__(self, config: AgentConfig, *, backend: ContainerBackend | None = None) -> None:
        self.config = config
        self.agent_id = config.agent.id
        self.backend: ContainerBackend = backend or DockerBackend()
        self.registry = KernelRegistry()
        self.started_at = time.time()
        self.ready = False
        self._stop = asyncio.Event()
        self._stack = AsyncExitStack()
        self._tasks = TaskSupervisor("agent")
        self.bus = None
        self.events = EventAdapter(None)
        self.ports = PortPool(*config.container.port_range,
                              cooldown=config.container.port_reuse_cooldown_sec)
        c = config.container
        self.scratch = ScratchManager(c.scratch_root, c.scratch_type, c.scratch_size)
        self.runner_dir = (c.runner_path or RUNNER_DIR).resolve()
        self.resources: ResourceManager
        self.lifecycle: KernelLifecycle
        self.reconciler: Reconciler

    # ---------------------------------------------------------------- construction
    async def _build_resources(self) -> ResourceManager:
        plugins = await load_plugins(
            allow=self.config.agent.allow_compute_plugins,
            block=self.config.agent.block_compute_plugins,
            configs=self.config.plugins,
        )
        r = self.config.resource
        return ResourceManager(
            plugins, reserved={SlotName("cpu"): Decimal(r.reserved_cpu),
                                SlotName("mem"): Decimal(r.reserved_mem)},
            allocation_order=r.allocation_order,
            affinity_policy=AffinityPolicy[r.affinity_policy],
        )

    def _build_lifecycle(self) -> KernelLifecycle:
        from berth.runner.client import RunnerClient

        c, k = self.config.container, self.config.kernel_lifecycles
        rpc_host, rpc_port = parse_host_port(self.config.agent.advertised_rpc_addr
                                             or self.config.agent.rpc_listen_addr)
        settings = LifecycleSettings(
            agent_id=self.agent_id, bind_host=c.bind_host,
            kernel_host=c.advertised_host or c.bind_host, default_uid=c.kernel_uid,
            default_gid=c.kernel_gid, pids_limit=c.pids_limit, nofile_limit=_safe_nofile(c.nofile_limit),
            stop_grace=c.stop_grace_sec, preparing_timeout=k.preparing_timeout_sec,
            pull_timeout=self.config.api.pull_timeout, creating_timeout=k.creating_timeout_sec,
            terminating_timeout=k.terminating_timeout_sec,
            creation_concurrency=self.config.agent.kernel_creation_concurrency,
            runner_dir=self.runner_dir, scaling_group=self.config.agent.scaling_group,
            agent_addr=f"tcp://{rpc_host}:{rpc_port}",
        )
        return KernelLifecycle(
            settings, backend=self.backend, registry=self.registry,
            ledger=Ledger(self.scratch.root), resources=ResourceAdapter(self.resources),
            ports=self.ports, scratch=self.scratch,
            mounts=MountAdapter(c.vfolder_allowed_roots, self.runner_dir),
            runner_factory=RunnerClient, events=self.events,
        )

    # ---------------------------------------------------------------- life
    async def startup(self) -> None:
        if not await self.backend.ping():
            raise BackendError("the Docker engine does not answer")
        self.resources = await self._build_resources()
        self.lifecycle = self._build_lifecycle()
        self.reconciler = Reconciler(self.lifecycle, self.agent_id)
        for path in (self.config.agent.var_base_path, self.config.agent.ipc_base_path,
                     self.config.container.scratch_root):
            path.mkdir(parents=True, exist_ok=True)
        report = await self.reconciler.at_start()
        log.info("agent %s: %d kernels adopted at start", self.agent_id, len(report.adopted))
        self._tasks.spawn(self._watch_containers(), name="docker-events")
        self._tasks.spawn(self._periodic_sync(), name="lifecycle-sync")
        self.ready = True

    async def serve(self) -> None:
        await self._stop.wait()

    def request_stop(self) -> None:
        self._stop.set()

    async def shutdown(self) -> None:
        self.ready = False
        await self._tasks.close()
        if hasattr(self, "lifecycle"):
            await self.lifecycle.close()
        await self._stack.aclose()
        await self.backend.close()
        log.info("agent %s stopped; %d kernels left running for the next start",
                 self.agent_id, len(self.registry))

    # ---------------------------------------------------------------- watchers
    async def _watch_containers(self) -> None:
        while True:
            try:
                async for event in self.backend.events({OWNER_LABEL: self.agent_id}):
                    if event.action in ("die", "destroy"):
                        self._tasks.spawn(self.lifecycle.on_container_exit(event.container_id),
                                          name=f"exit-{event.container_id[:12]}")
            except BackendError as exc:
                log.warning("docker events stream broke: %s; resubscribing", exc)
            await asyncio.sleep(1.0)

    async def _periodic_sync(self) -> None:
        interval = self.config.agent.sync_container_lifecycles
        if not interval.enabled:
            return
        while True:
            await asyncio.sleep(interval.interval)
            try:
                await self.reconciler.sync()
            except Exception as exc:  # one failed pass must not end the loop
                log.warning("lifecycle sync failed: %r", exc)

    def host_info(self) -> dict[str, str]:
        return {"architecture": platform.machine(), "version": __version__}
