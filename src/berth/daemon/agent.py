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
from decimal import Decimal
from pathlib import Path
from typing import TYPE_CHECKING, Any

from berth.backend import ContainerBackend, DockerBackend
from berth.config import AgentConfig, parse_host_port
from berth.daemon.adapters import EventAdapter, MountAdapter, OomCounterAdapter, ResourceAdapter
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
from berth.types import OWNER_LABEL, SlotName

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


def _safe_nofile(wanted: int) -> int:
    """Containers cannot be given more open files than the agent's own hard limit."""
    hard = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
    return wanted if hard == resource.RLIM_INFINITY else min(wanted, hard)


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
        # Built in startup(), in this order:
        self.ports: PortPool
        self.scratch: ScratchManager
        self.runner_dir: Path
        self.resources: ResourceManager
        self.link: ManagerLink
        self.images: ImageService
        self.commits: ImageCommitService
        self.networks: LocalNetworks
        self.telemetry: Telemetry
        self.lifecycle: KernelLifecycle
        self.reconciler: Reconciler
        self.routes: ExecRoutes

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
        c = self.config.container
        for path in (self.config.agent.var_base_path, self.config.agent.ipc_base_path,
                     c.scratch_root):
            path.mkdir(parents=True, exist_ok=True)
        self.ports = PortPool(*c.port_range, cooldown=c.port_reuse_cooldown_sec)
        self.scratch = ScratchManager(c.scratch_root, c.scratch_type, c.scratch_size)
        self.runner_dir = (c.runner_path or RUNNER_DIR).resolve()
        self.vfolder_hosts = VFolderHostResolver(VolumesConfig.from_config(self.config.volumes))
        self.resources = await self._build_resources()
        self._on_exit(self._cleanup_plugins)
        self.link = ManagerLink(self.config, self._public_key())
        self.errors = ErrorReporter(EventAdapter(self.link.emitter).emit)
        self.images = ImageService(self.backend, self.link.tasks, self.link.emitter,
                                   agent_id=self.agent_id,
                                   pull_timeout=self.config.api.pull_timeout)
        self.commits = ImageCommitService(
            self.backend, self.link.tasks, self.config.agent.image_commit_path,
            commit_timeout=self.config.api.commit_timeout,
            push_timeout=self.config.api.push_timeout)
        self.networks = LocalNetworks(self.backend, self.agent_id)
        self.telemetry = self._build_telemetry()
        self.tls_proxy = self._build_tls_proxy()
        self.blkio_device = await self._blkio_device()
        self.lifecycle = self._build_lifecycle()
        self._on_exit(self.lifecycle.close)
        self.routes = self.lifecycle.routes
        self.reconciler = Reconciler(self.lifecycle, self.agent_id, errors=self.errors,
                                     tasks=self.link.tasks,
                                     on_reaped=self.telemetry.metrics.observe_reaped)
        report = await self.reconciler.at_start()
        await self._start_warm_pool(self.lifecycle.warm_pool)
        await self.networks.remove_strays()
        await self.link.start(self.resources, self.images,
                              on_beat=self.telemetry.metrics.heartbeat,
                              committing=lambda: list(self.commits.ongoing))
        self._on_exit(self.link.close)
        self._report_plugin_failures()
        await self.telemetry.start()
        self._on_exit(self.telemetry.close)
        self._on_exit(self._tasks.close)
        self._tasks.spawn(self._watch_containers(), name="docker-events")
        self._tasks.spawn(self._periodic_sync(), name="lifecycle-sync")
        self._tasks.spawn(self.telemetry.run(), name="stats")
        await self._announce()
        return report

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

    async def _cleanup_plugins(self) -> None:
        for plugin in self.resources.plugins:
            await plugin.cleanup()

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

    def _report_plugin_failures(self) -> None:
        """After the first heartbeat (the Manager skips events of a node it does not know)."""
        for name, exc in self._plugin_failures:
            self.errors.report(f"compute plugin {name} failed to load and was skipped: {exc!r}",
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

    def _blkio_limits(self, scratch: ScratchManager) -> BlkioLimits:
        """Block-I/O rules (a limit contributor) on the disk under the data root and, with a
        hostfile scratch, on each kernel's scratch loop device."""
        hostfile = scratch.scratch_type is ScratchType.HOSTFILE
        return BlkioLimits(self.blkio_device,
                           (lambda kid: scratch.paths(kid).kernel_dir) if hostfile else None)

    async def _pull_image(self, image_config: Mapping[str, Any]) -> None:
        """PULLING: the same background task check_and_pull uses, awaited."""
        record = await self.images.pull_and_wait(image_config)
        if record.status != TaskStatus.DONE:
            raise ImagePullFailed(record.message or "pull failed",
                                  image=str(image_config.get("canonical")))

    def _build_telemetry(self) -> Telemetry:
        c = self.config.container
        return Telemetry(
            self.agent_id, self.config.agent.internal_addr, self.registry,
            interval=self.config.debug.stats_interval, readiness=self._readiness,
            scratch_quota=c.scratch_size or None,
            info={"agent_id": self.agent_id},
            scratch_dir=lambda kid: self.scratch.paths(kid).kernel_dir,
            resources=self.resources, errors=self.errors, sinks=[self.link.publish_stats],
            holdings=self._holdings)  # read at scrape time, once the server serves

    def _build_lifecycle(self) -> KernelLifecycle:
        from berth.runner import RunnerClient

        c, k = self.config.container, self.config.kernel_lifecycles
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
            runner_dir=self.runner_dir, scaling_group=self.config.agent.scaling_group,
            agent_addr=f"tcp://{rpc_host}:{rpc_port}", policy=KernelPolicy.from_config(
                c, owned_environ=plugin_env_names(self.resources.plugins)),
            slot_types=self.resources.slot_types(),
            enforce_image_minimums=c.enforce_image_minimums,
            restart_policy=k.restart_policy, restart_backoff_base=k.restart_backoff_base_sec,
            restart_backoff_cap=k.restart_backoff_cap_sec, restart_max=k.restart_max,
        )
        return KernelLifecycle(
            settings, backend=self.backend, registry=self.registry,
            ledger=Ledger(self.scratch.root), resources=ResourceAdapter(self.resources),
            ports=self.ports, scratch=self.scratch,
            mounts=MountAdapter(c.vfolder_allowed_roots, self.runner_dir),
            runner_factory=RunnerClient, events=EventAdapter(self.link.emitter),
            on_phase=self.telemetry.metrics.observe_start_phase, tls_proxy=self.tls_proxy,
            limits=[self._blkio_limits(self.scratch)], puller=self._pull_image,
            log_sink=self._container_log_sink(),
            oom_counter=OomCounterAdapter(self.telemetry.reader, self.telemetry.collector),
            on_worker_death=self.telemetry.metrics.observe_worker_death,
            on_auto_restart=self.telemetry.metrics.observe_auto_restart,
            warm_pool=self._warm_pool,
        )

    def _warm_pool(self, lifecycle: KernelLifecycle) -> WarmPoolRole:
        """[warm-pool], built by the lifecycle over itself; off while no image is configured
        (then it only reaps what an earlier configuration left)."""
        from berth.kernel import POOL_DIR, WarmPool, WarmPoolSettings
        from berth.runner import RunnerClient

        w, c = self.config.warm_pool, self.config.container
        pool_scratch = ScratchManager(c.scratch_root / POOL_DIR, c.scratch_type, c.scratch_size)
        metrics = self.telemetry.metrics
        return WarmPool(
            WarmPoolSettings(images=w.images, max_total=w.max_total, cpu=w.cpu, mem=w.mem,
                             refill_interval=w.refill_interval_sec,
                             start_timeout=self.config.kernel_lifecycles.creating_timeout_sec),
            lifecycle, pool_scratch=pool_scratch, kernel_scratch=self.scratch,
            runner_factory=RunnerClient,
            limits=[self._blkio_limits(pool_scratch)],
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

    def _container_log_sink(self) -> Callable[[str, str, str], Awaitable[None]] | None:
        """Where a kernel's container output goes before its container is removed: Loki (with
        ``[logging] loki-endpoint``, never blocking) and Redis (the Manager's containerlog keys)."""
        sinks: list[Callable[[str, str, str], Awaitable[None]]] = []
        if self.config.logging.loki_endpoint:
            from berth.telemetry import ContainerOutputShipper

            shipper = ContainerOutputShipper(self.config.logging.loki_endpoint, self.agent_id)
            self._on_exit(shipper.close)
            sinks.append(shipper.ship)
        if self.link.store is not None:
            sinks.append(self.link.ship_logs)
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
        self.config = AgentConfig.model_validate(merged)
        host, _ = parse_host_port(self.config.agent.advertised_rpc_addr
                                  or self.config.agent.rpc_listen_addr)
        _, watcher_port = parse_host_port(self.config.watcher.service_addr)
        await etcd.register_agent(self.agent_id, host, watcher_port)
        if not self.config.agent.skip_manager_detection:
            log.info("waiting for the manager to appear in etcd")
            await etcd.wait_for_manager()

    async def _announce(self) -> None:
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
            self._on_exit(functools.partial(etcd.deregister_agent, self.agent_id))
            extra.append(etcd.register_service)
            self._on_exit(functools.partial(etcd.unregister_service, record))
        await self.link.announce(record, extra)

    def _holdings(self) -> Holdings:
        """What the node holds, for the leak gauges (scrape time; listdir and counters only)."""
        kernels = self.scratch.scan()
        ledgers = sum(1 for kid in kernels if os.path.lexists(self.lifecycle.ledger.path(kid)))
        return Holdings(
            containers=self.reconciler.containers_owned, ledgers=ledgers,
            scratch_dirs=len(kernels),
            host_ports=self.ports.last - self.ports.first + 1 - self.ports.free_count,
            slots={str(k): v for k, v in self.resources.used_slots().items()})

    # ---------------------------------------------------------------- watchers
    async def _readiness(self) -> list[str]:
        reasons = []
        if not self.ready:
            reasons.append("agent is starting or stopping")
        if not await self.backend.ping():
            reasons.append("docker engine does not answer")
        return reasons

    async def _watch_containers(self) -> None:
        """Docker events of this agent's containers. The stream ends or breaks when the engine
        stops or restarts: once the engine answers again the stream is subscribed anew, and one
        sync pass soon after catches the deaths whose events were missed meanwhile."""
        broke = False
        while True:
            try:
                events = self.backend.events({OWNER_LABEL: self.agent_id})
                if broke:
                    self._tasks.spawn(self._resync(), name="resync-after-events-break")
                async for event in events:
                    if event.action == "oom":
                        self.lifecycle.on_container_oom(event.container_id)
                    elif event.action in ("die", "destroy"):
                        self._tasks.spawn(self.lifecycle.on_container_exit(event.container_id),
                                          name=f"exit-{event.container_id[:12]}")
                log.warning("docker events stream ended; resubscribing")
            except Exception as exc:  # noqa: BLE001 - whatever broke the stream, resubscribe
                log.warning("docker events stream broke: %r; resubscribing", exc)
            broke = True
            await asyncio.sleep(1.0)
            while not await self.backend.ping():  # noqa: ASYNC110 - a down engine has nothing to wait on
                await asyncio.sleep(1.0)

    async def _resync(self, delay: float = 1.0) -> None:
        """One lifecycle sync pass ``delay`` seconds after the events stream is back."""
        await asyncio.sleep(delay)
        try:
            count = await self.reconciler.sync()
            self.telemetry.metrics.observe_lifecycle_sync()
            log.info("resync after the events stream broke: %d corrections", count)
        except Exception as exc:  # noqa: BLE001 - the periodic sync retries
            self.telemetry.metrics.observe_lifecycle_sync(exc)
            log.warning("resync after the events stream broke failed: %r", exc)

    async def _periodic_sync(self) -> None:
        interval = self.config.agent.sync_container_lifecycles
        if not interval.enabled:
            return
        metrics = self.telemetry.metrics
        while True:
            await asyncio.sleep(interval.interval)
            try:
                await self.reconciler.sync()
                metrics.observe_lifecycle_sync()
                self.errors.clear("lifecycle-sync")
            except Exception as exc:  # noqa: BLE001 - one failed pass must not end the loop
                metrics.observe_lifecycle_sync(exc)
                log.warning("lifecycle sync failed: %r", exc)
                self.errors.report(f"periodic container lifecycle sync failed: {exc!r}",
                                   source="lifecycle-sync", exc=exc, key="lifecycle-sync")
