"""The agent: the only wiring. ``startup()`` returns when the node is ready, ``serve()`` runs
until asked to stop, ``shutdown()`` leaves every kernel running for the next agent to adopt.

The RPC methods live on :class:`berth.daemon.facade.AgentFacade`; this module owns the parts and the
order they start and stop in (reverse order, through one exit stack).
"""

from __future__ import annotations

import asyncio
import functools
import logging
import os
import resource
import time
from collections.abc import Awaitable, Callable, Mapping
from contextlib import AsyncExitStack
from dataclasses import dataclass, fields
from decimal import Decimal
from pathlib import Path
from typing import TYPE_CHECKING, Any

from berth.backend import ContainerBackend, DockerBackend
from berth.config import AgentConfig, parse_host_port, validate_config
from berth.daemon.adapters import EventAdapter, MountAdapter, OomCounterAdapter, ResourceAdapter
from berth.daemon.container_events import ContainerEvents
from berth.errors import BackendError, BerthError, ImagePullFailed
from berth.events import ErrorReporter, ManagerLink, TaskStatus
from berth.images import ImageCommitService, ImageService
from berth.kernel import (
    ExecRoutes,
    KernelLifecycle,
    KernelPolicy,
    KernelRegistry,
    Ledger,
    LifecycleSettings,
    Reconciler,
    ReconcileReport,
    WarmPoolRole,
)
from berth.network import LocalNetworks, PortPool, TLSServiceProxy
from berth.plugins import load_plugins
from berth.resources import AffinityPolicy, ResourceManager, plugin_env_names
from berth.runner import RUNNER_DIR
from berth.stats import BlkioLimits, BlockDevice, block_device_of
from berth.storage import ScratchManager, ScratchType, VFolderHostResolver, VolumesConfig
from berth.tasks import TaskSupervisor
from berth.telemetry import Holdings, Telemetry
from berth.types import SlotName

if TYPE_CHECKING:
    from berth.events import EtcdConfigSource

__all__ = ["Agent"]

log = logging.getLogger(__name__)

SHUTDOWN_GRACE = 10.0  # seconds each part may take to release at shutdown


def raise_nofile_limit() -> tuple[int, int]:
    """Raise the open-file soft limit to the hard limit, as daemons do (a 1,024 soft limit
    runs out near 500 kernels: runner sockets, held counter files); (before, after)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != hard and soft != resource.RLIM_INFINITY:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
        except (ValueError, OSError) as exc:
            log.warning("open-file limit stays %d (hard %d): %r", soft, hard, exc)
            return soft, soft
    after = resource.getrlimit(resource.RLIMIT_NOFILE)[0]
    log.info("open-file limit: soft %d -> %d (hard %d)", soft, after, hard)
    return soft, after


async def _cleanup_plugins(resources: ResourceManager) -> None:
    for plugin in resources.plugins:
        await plugin.cleanup()


def _safe_nofile(wanted: int) -> int:
    """Containers cannot be given more open files than the agent's own hard limit."""
    hard = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
    return wanted if hard == resource.RLIM_INFINITY else min(wanted, hard)


@dataclass(frozen=True)
class NodeParts:
    """What startup() builds before the kernel lifecycle, in build order."""

    ports: PortPool
    scratch: ScratchManager
    runner_dir: Path
    vfolder_hosts: VFolderHostResolver
    resources: ResourceManager
    link: ManagerLink
    errors: ErrorReporter
    images: ImageService
    commits: ImageCommitService
    networks: LocalNetworks
    telemetry: Telemetry
    tls_proxy: TLSServiceProxy | None
    blkio_device: BlockDevice | None


@dataclass(frozen=True)
class AgentParts(NodeParts):
    """Every part of a started agent; set once, when startup() has built them all."""

    lifecycle: KernelLifecycle
    reconciler: Reconciler

    @property
    def routes(self) -> ExecRoutes:
        return self.lifecycle.routes


class Agent:
    def __init__(self, config: AgentConfig, *, backend: ContainerBackend | None = None,
                 shutdown_grace: float = SHUTDOWN_GRACE) -> None:
        self.config = config
        self.shutdown_grace = shutdown_grace
        self.agent_id = config.agent.id
        self.backend: ContainerBackend = backend or DockerBackend(config.container.docker_host)
        self.registry = KernelRegistry()
        self.started_at = time.time()
        self.ready = False
        self._stop = asyncio.Event()
        # Everything startup() starts, released in reverse order at shutdown (or when startup
        # fails half-way): uvicorn's shape, one exit stack.
        self._stack = AsyncExitStack()
        self._tasks = TaskSupervisor("agent")
        self.etcd: EtcdConfigSource | None = None
        # Compute plugins that failed to load or init, told to the Manager once it listens.
        self._plugin_failures: list[tuple[str, BaseException]] = []
        self._parts: AgentParts | None = None  # startup() builds them

    @property
    def parts(self) -> AgentParts:
        if self._parts is None:
            raise RuntimeError(f"agent {self.agent_id} has not started")
        return self._parts

    # ---------------------------------------------------------------- life
    async def startup(self) -> None:
        """Start every part, each on the exit stack as it starts; return once the node is
        ready. A failure half-way releases what was started, in reverse order, and raises."""
        try:
            report = await self._start()
        except BaseException:
            await self._release()
            raise
        self.ready = True
        log.info("agent %s ready: %d kernels adopted, %d cleaned at start", self.agent_id,
                 len(report.adopted), len(report.cleaned))

    def _on_exit(self, close: Callable[[], Awaitable[Any]]) -> None:
        """Release ``close`` at shutdown, given ``shutdown_grace`` seconds (then left behind,
        logged, and the release goes on with the next part)."""
        async def within_grace() -> None:
            try:
                await asyncio.wait_for(close(), self.shutdown_grace)
            except TimeoutError:
                log.warning("shutdown: %r took over %.0fs; left behind", close,
                            self.shutdown_grace)
        self._stack.push_async_callback(within_grace)

    async def _start(self) -> ReconcileReport:
        raise_nofile_limit()
        self._on_exit(self.backend.close)
        if not await self.backend.ping():
            raise BackendError("the Docker engine does not answer")
        await self._join_etcd()
        node = await self._build_node()
        lifecycle = self._build_lifecycle(node)
        self._on_exit(lifecycle.close)
        reconciler = Reconciler(lifecycle, self.agent_id, errors=node.errors,
                                tasks=node.link.tasks,
                                on_reaped=node.telemetry.metrics.observe_reaped)
        self._parts = parts = AgentParts(
            **{f.name: getattr(node, f.name) for f in fields(NodeParts)},
            lifecycle=lifecycle, reconciler=reconciler)
        report = await reconciler.at_start()
        await self._start_warm_pool(lifecycle.warm_pool)
        await parts.networks.remove_strays()
        await parts.link.start(parts.resources, parts.images,
                               on_beat=parts.telemetry.metrics.heartbeat,
                               committing=lambda: list(parts.commits.ongoing))
        self._on_exit(parts.link.close)
        self._report_plugin_failures(parts.errors)
        await parts.telemetry.start()
        self._on_exit(parts.telemetry.close)
        self._on_exit(self._tasks.close)
        events = ContainerEvents(self.backend, self.agent_id, lifecycle, reconciler,
                                 parts.telemetry.metrics, self._tasks)
        self._tasks.spawn(events.run(), name="docker-events")
        self._tasks.spawn(self._periodic_sync(parts), name="lifecycle-sync")
        self._tasks.spawn(parts.telemetry.run(), name="stats")
        await self._announce(parts.link)
        return report

    async def _build_node(self) -> NodeParts:
        c = self.config.container
        for path in (self.config.agent.var_base_path, self.config.agent.ipc_base_path,
                     c.scratch_root):
            path.mkdir(parents=True, exist_ok=True)
        scratch = ScratchManager(c.scratch_root, c.scratch_type, c.scratch_size)
        resources = await self._build_resources()
        self._on_exit(functools.partial(_cleanup_plugins, resources))
        link = ManagerLink(self.config, self._public_key())
        errors = ErrorReporter(EventAdapter(link.emitter).emit)
        return NodeParts(
            ports=PortPool(*c.port_range, cooldown=c.port_reuse_cooldown_sec),
            scratch=scratch,
            runner_dir=(c.runner_path or RUNNER_DIR).resolve(),
            vfolder_hosts=VFolderHostResolver(VolumesConfig.from_config(self.config.volumes)),
            resources=resources, link=link, errors=errors,
            images=ImageService(self.backend, link.tasks, link.emitter, agent_id=self.agent_id,
                                pull_timeout=self.config.api.pull_timeout),
            commits=ImageCommitService(
                self.backend, link.tasks, self.config.agent.image_commit_path,
                commit_timeout=self.config.api.commit_timeout,
                push_timeout=self.config.api.push_timeout),
            networks=LocalNetworks(self.backend, self.agent_id),
            telemetry=self._build_telemetry(scratch, resources, errors, link),
            tls_proxy=self._build_tls_proxy(),
            blkio_device=await self._blkio_device(),
        )

    async def serve(self) -> None:
        await self._stop.wait()

    def spawn(self, coro: Any, *, name: str) -> None:
        """Run background work owned by the agent (cancelled at shutdown)."""
        self._tasks.spawn(coro, name=name)

    def request_stop(self) -> None:
        self._stop.set()

    async def shutdown(self) -> None:
        """Release what startup() started, in reverse order; kernels keep running."""
        await self._release()
        log.info("agent %s stopped; %d kernels left running for the next start",
                 self.agent_id, len(self.registry))

    async def _release(self) -> None:
        self.ready = False
        await self._stack.aclose()

    # ---------------------------------------------------------------- construction
    async def _build_resources(self) -> ResourceManager:
        plugins = await load_plugins(
            allow=self.config.agent.allow_compute_plugins,
            block=self.config.agent.block_compute_plugins,
            configs=self.config.plugins,
            on_failure=lambda name, exc: self._plugin_failures.append((name, exc)),
        )
        r, pool = self.config.resource, self.config.warm_pool
        # The warm pool's reserve is the node capacity its containers may hold, off the slots.
        warm = (pool.reserve_cpu, Decimal(pool.reserve_mem)) if pool.enabled else (0, 0)
        return ResourceManager(
            plugins, reserved={SlotName("cpu"): Decimal(r.reserved_cpu) + warm[0],
                               SlotName("mem"): Decimal(r.reserved_mem) + warm[1]},
            allocation_order=r.allocation_order,
            affinity_policy=AffinityPolicy[r.affinity_policy],
            overcommit={SlotName("cpu"): Decimal(str(r.cpu_overcommit_ratio))},
        )

    def _report_plugin_failures(self, errors: ErrorReporter) -> None:
        """After the first heartbeat (the Manager skips events of a node it does not know)."""
        for name, exc in self._plugin_failures:
            errors.report(f"compute plugin {name} failed to load and was skipped: {exc!r}",
                          source="plugin", exc=exc, plugin=name, stage="load")
        self._plugin_failures.clear()

    def _build_tls_proxy(self) -> TLSServiceProxy | None:
        """With ``[service-tls] cert`` and ``key``, HTTP service ports are served over TLS."""
        tls = self.config.service_tls
        if tls.cert is None or tls.key is None:
            return None
        proxy = TLSServiceProxy.from_files(tls.cert, tls.key)
        self._on_exit(proxy.close)
        return proxy

    async def _blkio_device(self) -> BlockDevice | None:
        """The block device under the engine's data root: where kernels' I/O is throttled."""
        try:
            root = await self.backend.root_dir()
            path = Path(root) if root else self.config.container.scratch_root
            return block_device_of(path)
        except (OSError, ValueError, BerthError) as exc:
            log.warning("block-I/O throttling disabled: no block device found (%s)", exc)
            return None

    @staticmethod
    def _blkio_limits(device: BlockDevice | None, scratch: ScratchManager) -> BlkioLimits:
        """Block-I/O rules (a limit contributor) on the disk under the data root and, with a
        hostfile scratch, on each kernel's scratch loop device."""
        hostfile = scratch.scratch_type is ScratchType.HOSTFILE
        return BlkioLimits(device,
                           (lambda kid: scratch.paths(kid).kernel_dir) if hostfile else None)

    async def _pull_image(self, image_config: Mapping[str, Any]) -> None:
        """PULLING: the same background task check_and_pull uses, awaited."""
        record = await self.parts.images.pull_and_wait(image_config)
        if record.status != TaskStatus.DONE:
            raise ImagePullFailed(record.message or "pull failed",
                                  image=str(image_config.get("canonical")))

    def _build_telemetry(self, scratch: ScratchManager, resources: ResourceManager,
                         errors: ErrorReporter, link: ManagerLink) -> Telemetry:
        c = self.config.container
        return Telemetry(
            self.agent_id, self.config.agent.internal_addr, self.registry,
            interval=self.config.debug.stats_interval, readiness=self._readiness,
            scratch_quota=c.scratch_size or None,
            info={"agent_id": self.agent_id},
            scratch_dir=lambda kid: scratch.paths(kid).kernel_dir,
            resources=resources, errors=errors, sinks=[link.publish_stats],
            holdings=self._holdings)  # read at scrape time, once the server serves

    def _build_lifecycle(self, node: NodeParts) -> KernelLifecycle:
        from berth.runner import RunnerClient

        c, k = self.config.container, self.config.kernel_lifecycles
        metrics = node.telemetry.metrics
        rpc_host, rpc_port = parse_host_port(self.config.agent.advertised_rpc_addr
                                             or self.config.agent.rpc_listen_addr)
        settings = LifecycleSettings(
            agent_id=self.agent_id, bind_host=c.bind_host,
            kernel_host=c.advertised_host or c.bind_host, default_uid=c.kernel_uid,
            default_gid=c.kernel_gid, pids_limit=c.pids_limit,
            nofile_limit=_safe_nofile(c.nofile_limit),
            stop_grace=c.stop_grace_sec, preparing_timeout=k.preparing_timeout_sec,
            pull_timeout=self.config.api.pull_timeout, creating_timeout=k.creating_timeout_sec,
            terminating_timeout=k.terminating_timeout_sec,
            creation_concurrency=self.config.agent.kernel_creation_concurrency,
            runner_dir=node.runner_dir, scaling_group=self.config.agent.scaling_group,
            agent_addr=f"tcp://{rpc_host}:{rpc_port}", policy=KernelPolicy.from_config(
                c, owned_environ=plugin_env_names(node.resources.plugins)),
            slot_types=node.resources.slot_types(),
            enforce_image_minimums=c.enforce_image_minimums,
            restart_policy=k.restart_policy, restart_backoff_base=k.restart_backoff_base_sec,
            restart_backoff_cap=k.restart_backoff_cap_sec, restart_max=k.restart_max,
        )
        return KernelLifecycle(
            settings, backend=self.backend, registry=self.registry,
            ledger=Ledger(node.scratch.root), resources=ResourceAdapter(node.resources),
            ports=node.ports, scratch=node.scratch,
            mounts=MountAdapter(c.vfolder_allowed_roots, node.runner_dir),
            runner_factory=RunnerClient, events=EventAdapter(node.link.emitter),
            on_phase=metrics.observe_start_phase, tls_proxy=node.tls_proxy,
            limits=[self._blkio_limits(node.blkio_device, node.scratch)],
            puller=self._pull_image, log_sink=self._container_log_sink(node.link),
            oom_counter=OomCounterAdapter(node.telemetry.reader, node.telemetry.collector),
            on_worker_death=metrics.observe_worker_death,
            on_auto_restart=metrics.observe_auto_restart,
            warm_pool=functools.partial(self._warm_pool, node),
        )

    def _warm_pool(self, node: NodeParts, lifecycle: KernelLifecycle) -> WarmPoolRole:
        """[warm-pool], built by the lifecycle over itself; off while no image is configured
        (then it only reaps what an earlier configuration left)."""
        from berth.kernel import POOL_DIR, WarmPool, WarmPoolSettings
        from berth.runner import RunnerClient

        w, c = self.config.warm_pool, self.config.container
        pool_scratch = ScratchManager(c.scratch_root / POOL_DIR, c.scratch_type, c.scratch_size)
        metrics = node.telemetry.metrics
        return WarmPool(
            WarmPoolSettings(images=w.images, max_total=w.max_total, cpu=w.cpu, mem=w.mem,
                             refill_interval=w.refill_interval_sec,
                             start_timeout=self.config.kernel_lifecycles.creating_timeout_sec),
            lifecycle, pool_scratch=pool_scratch, kernel_scratch=node.scratch,
            runner_factory=RunnerClient,
            limits=[self._blkio_limits(node.blkio_device, pool_scratch)],
            on_event=lambda event, value, seconds: metrics.observe_warm_pool(
                event, value if event != "refill" else "", seconds),
            on_size=metrics.set_warm_pool_size)

    async def _start_warm_pool(self, pool: WarmPoolRole | None) -> None:
        """Adopt (or reap) the pool's containers left running, then keep it full in its own
        background task."""
        assert pool is not None  # the agent always gives the lifecycle one
        claimed = {k.container_id for k in self.registry.live() if k.container_id}
        await pool.adopt_or_reap(claimed)
        self._on_exit(pool.close)
        pool.start()

    def _container_log_sink(self, link: ManagerLink
                            ) -> Callable[[str, str, str], Awaitable[None]] | None:
        """Where a kernel's container output goes before its container is removed: Loki (with
        ``[logging] loki-endpoint``, never blocking) and Redis (the Manager's containerlog keys)."""
        sinks: list[Callable[[str, str, str], Awaitable[None]]] = []
        if self.config.logging.loki_endpoint:
            from berth.telemetry import ContainerOutputShipper

            shipper = ContainerOutputShipper(self.config.logging.loki_endpoint, self.agent_id)
            self._on_exit(shipper.close)
            sinks.append(shipper.ship)
        if link.store is not None:
            sinks.append(link.ship_logs)
        if not sinks:
            return None

        async def ship(kernel_id: str, container_id: str, logs: str) -> None:
            for sink in sinks:
                await sink(kernel_id, container_id, logs)
        return ship

    def _public_key(self) -> str | None:
        path = self.config.agent.rpc_auth_agent_keypair
        if path is None:
            return None
        from berth.rpc import load_keypair

        return load_keypair(path).public_key.decode()

    # ---------------------------------------------------------------- etcd
    async def _join_etcd(self) -> None:
        """With ``[etcd]``: take the global config and register this node as `starting`."""
        if self.config.etcd is None:
            return
        from berth.events import EtcdConfigSource, apply_etcd_overrides

        e = self.config.etcd
        etcd = await self._stack.enter_async_context(
            EtcdConfigSource(e.addr, e.namespace, e.user, e.password))
        self.etcd = etcd
        global_cfg = await etcd.read_global_config()
        merged = apply_etcd_overrides(self.config.model_dump(by_alias=True, mode="json"),
                                      global_cfg)
        self.config = validate_config(merged, origin="the file and etcd's config")
        host, _ = parse_host_port(self.config.agent.advertised_rpc_addr
                                  or self.config.agent.rpc_listen_addr)
        _, watcher_port = parse_host_port(self.config.watcher.service_addr)
        await etcd.register_agent(self.agent_id, host, watcher_port)
        # removed at any stop from here, a start that fails included: no node left `starting`
        self._on_exit(functools.partial(etcd.deregister_agent, self.agent_id))
        if not self.config.agent.skip_manager_detection:
            log.info("waiting for the manager to appear in etcd")
            await etcd.wait_for_manager()

    async def _announce(self, link: ManagerLink) -> None:
        """Mark the node running in etcd (removed again at a clean stop) and announce the
        metrics endpoint for service discovery: events, Redis and, with etcd, etcd."""
        from berth import __version__
        from berth.events import Publisher, ServiceRecord

        announce = self.config.agent.announce_internal_addr or self.config.agent.internal_addr
        host, port = parse_host_port(announce)
        now = time.time()
        record = ServiceRecord(self.agent_id, __version__, host, port, "http", now, now)
        extra: list[Publisher] = []
        if self.etcd is not None:
            etcd = self.etcd
            await etcd.mark_running(self.agent_id)
            extra.append(etcd.register_service)
            self._on_exit(functools.partial(etcd.unregister_service, record))
        await link.announce(record, extra)

    def _holdings(self) -> Holdings:
        """What the node holds, for the leak gauges (scrape time, once the metrics server
        serves, which is after every part is built; listdir and counters only)."""
        p = self.parts
        kernels = p.scratch.scan()
        ledgers = sum(1 for kid in kernels if os.path.lexists(p.lifecycle.ledger.path(kid)))
        return Holdings(
            containers=p.reconciler.containers_owned, ledgers=ledgers,
            scratch_dirs=len(kernels),
            host_ports=p.ports.last - p.ports.first + 1 - p.ports.free_count,
            slots={str(k): v for k, v in p.resources.used_slots().items()})

    # ---------------------------------------------------------------- watchers
    async def _readiness(self) -> list[str]:
        reasons = []
        if not self.ready:
            reasons.append("agent is starting or stopping")
        if not await self.backend.ping():
            reasons.append("docker engine does not answer")
        return reasons

    async def _periodic_sync(self, parts: AgentParts) -> None:
        interval = self.config.agent.sync_container_lifecycles
        if not interval.enabled:
            return
        metrics = parts.telemetry.metrics
        while True:
            await asyncio.sleep(interval.interval)
            try:
                await parts.reconciler.sync()
                metrics.observe_lifecycle_sync()
                parts.errors.clear("lifecycle-sync")
            except Exception as exc:  # noqa: BLE001 - one failed pass must not end the loop
                metrics.observe_lifecycle_sync(exc)
                log.warning("lifecycle sync failed: %r", exc)
                parts.errors.report(f"periodic container lifecycle sync failed: {exc!r}",
                                    source="lifecycle-sync", exc=exc, key="lifecycle-sync")
