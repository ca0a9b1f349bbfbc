"""A kernel's life on this node: create, restart, destroy, and the end of a container that died.

Every transitional state runs under its own deadline; exceeding it ends the kernel with a
recorded reason. Teardown is one idempotent task per kernel: a second trigger (the RPC and the
Docker ``die`` event, say) awaits the first instead of cleaning twice.

Files in the kernel's scratch are written, probed and removed through `storage.nofollow` (the
kernel's user can put links in `work/` and `config/ipc/`); the runner's socket directory is
sealed once the runner is ready and on adoption, and unsealed only for a new container.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import stat
import time
import uuid
from collections.abc import Awaitable, Callable, Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from berth import logctx
from berth.backend import ContainerBackend, ImageInfo
from berth.errors import (
    BackendError,
    BerthError,
    ContainerNotFound,
    DeadlineExceeded,
    ImageNotAvailable,
    ImagePullFailed,
    KernelNotFound,
    KernelStartupFailed,
    KernelStateError,
)
from berth.events import agent_error_payload
from berth.kernel.cluster import cluster_default_environ, cluster_environ, write_ssh_files
from berth.kernel.container_config import (
    ContainerPlan,
    build_container_config,
    container_name,
    has_runner,
    idle_command,
    kernel_environ,
    overridden_environ,
    resource_txt,
    runner_command,
)
from berth.kernel.deps import (
    EventSink,
    MountPlanner,
    OomCounter,
    PortRole,
    ResourceRole,
    RunnerFactory,
    RunnerRole,
    ScratchLayout,
    ScratchRole,
    TLSProxyRole,
    WarmPoolRole,
)
from berth.kernel.exec_route import ExecRoutes
from berth.kernel.image_minimums import check_image_minimums
from berth.kernel.ledger import Ledger, LedgerEntry
from berth.kernel.oom import OOM_SETTLE_SECONDS, OomWatch
from berth.kernel.policy import KernelPolicy, check_kernel_spec
from berth.kernel.registry import Kernel, KernelRegistry, Termination
from berth.kernel.service_ports import (
    assign_host_ports,
    declared_service_ports,
    host_port_map,
    service_ports_from_wire,
    service_ports_label,
    service_ports_to_wire,
)
from berth.kernel.spec import KernelSpec, parse_kernel_spec
from berth.kernel.sshkeys import session_keypair, write_session_keys
from berth.kernel.state import classify_exit
from berth.resources import KernelAllocation, LimitContributor, merge_docker_args
from berth.runner import ReadySignal
from berth.storage import nofollow
from berth.tasks import TaskSupervisor
from berth.types import KernelId, KernelState, SlotName, SlotType, TerminationReason

__all__ = ["KernelLifecycle", "LifecycleSettings"]

log = logging.getLogger(__name__)
R = TerminationReason
LOG_TAIL = 10000  # lines of a dead container's output shipped to the Manager
# A starting container is woken by its runner's ready signal and by its exit event; without
# either, Docker and the runner are asked this often (events lost, the FIFO removed).
ALIVE_CHECK_SECONDS = 5.0
# How long a cancelled create still waits for the engine's answer to its container create.
ENGINE_SETTLE_SECONDS = 1.0


@dataclass
class _StartWatch:
    wake: asyncio.Event = field(default_factory=asyncio.Event)
    died: bool = False  # an exit notice came for the container
    signal: ReadySignal | None = None


@dataclass(frozen=True)
class LifecycleSettings:
    agent_id: str
    bind_host: str
    kernel_host: str
    default_uid: int
    default_gid: int
    pids_limit: int
    nofile_limit: int
    stop_grace: float
    preparing_timeout: float
    pull_timeout: float
    creating_timeout: float
    terminating_timeout: float
    creation_concurrency: int
    runner_dir: Path
    scaling_group: str = "default"
    agent_addr: str = ""
    policy: KernelPolicy = field(default_factory=KernelPolicy)  # what a spec may ask for
    # The node's slots by type: a create's resource_slots and image minimums are read by them
    # (None: cpu, mem and plain numbers).
    slot_types: Mapping[SlotName, SlotType] | None = None
    enforce_image_minimums: bool = False  # [container] enforce-image-minimums
    restart_policy: str = "none"  # [kernel-lifecycles] restart-policy: "none" | "on-failure"
    restart_backoff_base: float = 1.0
    restart_backoff_cap: float = 30.0
    restart_max: int = 3


class KernelLifecycle:
    def __init__(
        self, settings: LifecycleSettings, *, backend: ContainerBackend, registry: KernelRegistry,
        ledger: Ledger, resources: ResourceRole, ports: PortRole, scratch: ScratchRole,
        mounts: MountPlanner, runner_factory: RunnerFactory, events: EventSink,
        on_phase: Callable[[str, float], None] = lambda phase, seconds: None,
        tls_proxy: TLSProxyRole | None = None,
        limits: Sequence[LimitContributor] = (),
        puller: Callable[[Mapping[str, Any]], Awaitable[None]] | None = None,
        log_sink: Callable[[str, str, str], Awaitable[None]] | None = None,
        oom_counter: OomCounter | None = None,
        on_worker_death: Callable[[str], None] = lambda reason: None,
        on_auto_restart: Callable[[str], None] = lambda outcome: None,
        warm_pool: Callable[[KernelLifecycle], WarmPoolRole] | None = None,
    ) -> None:
        self.s = settings
        self.backend = backend
        self.registry = registry
        self.ledger = ledger
        self.resources = resources
        self.ports = ports
        self.scratch = scratch
        self.mounts = mounts
        self.runner_factory = runner_factory
        self.events = events
        self.on_phase = on_phase
        self.tls_proxy = tls_proxy
        self.limits = tuple(limits)  # block-I/O rates…: merged after the plugins' share
        self.puller = puller
        self.log_sink = log_sink
        self.oom_counter = oom_counter
        self.on_worker_death = on_worker_death
        self.on_auto_restart = on_auto_restart  # the metric
        self.runners: dict[KernelId, RunnerRole] = {}
        self.layouts: dict[KernelId, ScratchLayout] = {}
        self._create_slots = asyncio.Semaphore(settings.creation_concurrency)  # Docker calls
        self._starting: dict[str, _StartWatch] = {}  # containers a create waits for, by id
        self._teardowns: dict[str, asyncio.Task[None]] = {}
        # A create's or restart's work, as its own task: an end that comes meanwhile (a
        # destroy) cancels it and lets its rollback end the kernel (`_stop_work`).
        self._work: dict[KernelId, asyncio.Task[Any]] = {}
        self._judging: set[str] = set()  # containers whose exit is being judged right now
        self._tasks = TaskSupervisor("lifecycle")
        self._ledger_writer = ThreadPoolExecutor(1, thread_name_prefix="berth-ledger")
        # How the RPC surface executes in a kernel: its runner, or docker exec for an image
        # without one; a kernel's route goes when it is retired.
        self.routes = ExecRoutes(self.runners, backend)
        # [warm-pool]: makes a pre-started container the kernel when it can serve the spec
        # exactly (berth.kernel.warmpool); otherwise the create goes on cold. Built last, over
        # this lifecycle, whose steps a claim shares.
        self.warm_pool: WarmPoolRole | None = None if warm_pool is None else warm_pool(self)

    # ---------------------------------------------------------------- create
    async def create(self, raw_config: Mapping[str, Any], kernel_id: KernelId,
                     session_id: str) -> dict[str, Any]:
        with logctx.bound(kernel_id=kernel_id, session_id=session_id):
            return await self._create_kernel(raw_config, kernel_id, session_id)

    async def _create_kernel(self, raw_config: Mapping[str, Any], kernel_id: KernelId,
                             session_id: str) -> dict[str, Any]:
        spec = parse_kernel_spec(dict(raw_config), kernel_id=kernel_id, session_id=session_id,
                                 slot_types=self.s.slot_types)
        check_kernel_spec(spec, self.s.policy)  # refused before anything exists
        kernel = Kernel(
            kernel_id=KernelId(kernel_id), session_id=session_id, spec=spec,
            uid=spec.uid if spec.uid is not None else self.s.default_uid,
            gid=spec.main_gid if spec.main_gid is not None else self.s.default_gid,
        )
        async with self.registry.lock:
            self.registry.add(kernel)
        self._emit("kernel_preparing", kernel, reason="")
        log.info("kernel %s: PREPARING (image %s)", kernel_id, spec.image.canonical)
        try:
            await self._as_work(kernel, lambda: self._create(kernel))
        except BaseException as exc:
            reason, detail = kernel.doomed or _failure_reason(exc)
            log.warning("kernel %s: creation failed: %s", kernel_id, detail)
            await asyncio.shield(self._terminate(kernel, reason, detail=detail))
            if isinstance(exc, asyncio.CancelledError) and not _cancelled_by_end(kernel):
                raise
            if isinstance(exc, BerthError) and kernel.doomed is None:
                raise
            raise KernelStartupFailed(f"kernel {kernel_id}: {detail}", kernel_id=kernel_id,
                                      reason=str(reason)) from exc
        return self.creation_result(kernel)

    async def _as_work(self, kernel: Kernel, work: Callable[[], Awaitable[Any]]) -> Any:
        """Run a create's or restart's ``work()`` as its own task, which an end of the kernel
        that comes meanwhile cancels (`_stop_work`); cancelling the caller cancels it too."""
        async def run() -> Any:  # work() is made in the task: one cancelled first makes none
            return await work()
        task = asyncio.ensure_future(run())
        self._work[kernel.kernel_id] = task
        try:
            return await task
        finally:
            if self._work.get(kernel.kernel_id) is task:
                del self._work[kernel.kernel_id]

    async def _stop_work(self, kernel: Kernel, reason: TerminationReason, detail: str) -> bool:
        """Cancel the create or restart under way, if any, and wait until it stopped; its
        rollback ends the kernel with ``reason``. False when none was under way."""
        task = self._work.get(kernel.kernel_id)
        if task is None or task.done() or task is asyncio.current_task():
            return False
        if kernel.doomed is None:
            during = "creation" if kernel.state in _CREATING_STATES else "restart"
            kernel.doomed = (reason, detail or f"{reason} during its {during}")
        log.info("kernel %s: %s; cancelling its %s", kernel.kernel_id, reason,
                 str(kernel.state).lower())
        task.cancel()
        await asyncio.wait([task])  # its rollback may run after: the teardown is shared
        return True

    async def _create(self, kernel: Kernel) -> None:
        started = time.monotonic()
        image = await self._phase(kernel, "prepare", self.s.preparing_timeout,
                                  self._resolve_image(kernel))
        if image is None:
            kernel.transition(KernelState.PULLING)
            self._emit("kernel_pulling", kernel, reason=kernel.spec.image.canonical)
            image = await self._phase(kernel, "pull", self.s.pull_timeout, self._pull(kernel))
        kernel.image_id = image.id
        kernel.image_labels = {**image.labels, **kernel.spec.image.labels}
        if self.s.enforce_image_minimums:
            check_image_minimums(kernel.image_labels, kernel.spec.resource_slots,
                                 kernel.spec.resource_opts, image=kernel.spec.image.canonical,
                                 slot_types=self.s.slot_types)
        kernel.transition(KernelState.CREATING)
        self._emit("kernel_creating", kernel, reason="")
        await self._phase(kernel, "create", self.s.creating_timeout, self._materialise(kernel))
        await self._write_ledger(kernel, KernelState.RUNNING)  # on disk before anyone sees it
        kernel.transition(KernelState.RUNNING)
        self.on_phase("total", time.monotonic() - started)
        log.info("kernel %s: RUNNING (container %s, ports %s)", kernel.kernel_id,
                 (kernel.container_id or "")[:12], kernel.host_ports)
        self._emit("kernel_started", kernel, reason="", creation_info=self._creation_info(kernel))

    async def _phase(self, kernel: Kernel, name: str, timeout: float,
                     work: Awaitable[Any]) -> Any:
        started = time.monotonic()
        try:
            async with asyncio.timeout(timeout):
                result = await work
        except TimeoutError as exc:
            raise DeadlineExceeded(
                f"kernel {kernel.kernel_id}: {kernel.state} exceeded its {timeout:g}s deadline",
                kernel_id=kernel.kernel_id, state=str(kernel.state), deadline=timeout,
            ) from exc
        seconds = time.monotonic() - started
        kernel.phase_durations[name] = seconds
        self.on_phase(name, seconds)
        return result

    async def _resolve_image(self, kernel: Kernel) -> ImageInfo | None:
        """The local image, or None when it must be pulled first."""
        image = kernel.spec.image
        info = await self.backend.image_inspect(image.ref)
        if info is not None:
            stale = (image.auto_pull == "digest" and image.digest and not image.is_local
                     and image.digest not in (info.id, *info.digests))
            if not stale:
                return info
        if image.is_local or image.auto_pull == "none":
            if info is not None:
                return info
            raise ImageNotAvailable(f"image {image.ref} is not on this node",
                                    image=image.ref, kernel_id=kernel.kernel_id)
        return None

    async def _pull(self, kernel: Kernel) -> ImageInfo:
        image = kernel.spec.image
        if self.puller is not None:  # a background task with byte progress and pull events
            await self.puller(image.model_dump(mode="json"))
            info = await self.backend.image_inspect(image.ref)
            if info is None:
                raise ImagePullFailed(f"{image.ref} is absent after its pull",
                                      image=image.ref)
            return info
        registry = image.registry or {}
        auth = ({"username": registry["username"], "password": registry.get("password", "")}
                if registry.get("username") else None)
        async for event in self.backend.image_pull(image.ref, auth):
            if "error" in event:
                raise ImagePullFailed(str(event["error"]), image=image.ref)
        info = await self.backend.image_inspect(image.ref)
        if info is None:
            raise ImagePullFailed(f"{image.ref} is absent after its pull",
                                  image=image.ref)
        return info

    async def _materialise(self, kernel: Kernel) -> None:
        spec = kernel.spec
        kernel.allocation = self.resources.allocate(
            kernel.kernel_id, spec.resource_slots, spec.resource_opts)
        kernel.service_ports = declared_service_ports(kernel.kernel_id, spec,
                                                      kernel.image_labels)
        if self.warm_pool is not None and await self.warm_pool.serve(kernel):
            return
        needed = sum(len(s.container_ports) for s in kernel.service_ports)
        tls = self._tls_container_ports(kernel)
        host_ports = self.ports.acquire_many(needed + len(tls))
        kernel.service_ports = assign_host_ports(kernel.service_ports, host_ports[:needed])
        kernel.host_ports.update(host_port_map(kernel.service_ports))
        kernel.tls_ports = dict(zip(tls, host_ports[needed:], strict=True))
        layout = await self.scratch.create(kernel.kernel_id, kernel.uid, kernel.gid)
        self.layouts[kernel.kernel_id] = layout
        plan = self._plan(kernel, layout)
        if overridden := overridden_environ(plan):
            log.warning("kernel %s: spec environ %s overridden by the agent's values",
                        kernel.kernel_id, ", ".join(overridden))
        self._prepare_files(kernel, layout, kernel_environ(plan))
        await self._write_ledger(kernel)  # before the container exists
        config = self._container_config(kernel, plan)
        await self._open_tls_routes(kernel)  # answers once the container publishes the port
        await self._run_container(kernel, layout, config)

    async def _run_container(self, kernel: Kernel, layout: ScratchLayout,
                             config: Mapping[str, Any]) -> None:
        """Create and start the kernel's container and wait until it is ready. The agent-wide
        creation limit covers the Docker calls only: waiting for a runner holds no slot."""
        with self._start_watch(kernel, layout) as watch:
            async with self._create_slots:
                made = asyncio.ensure_future(self.backend.create(
                    container_name(kernel.kernel_id), config))
                try:
                    kernel.container_id = await asyncio.shield(made)
                except asyncio.CancelledError:
                    # The engine makes a container it was asked for even when the caller
                    # gives up: learn its id (a while, not for a hung engine: the periodic
                    # sync removes what is made later), which the teardown removes it by.
                    await asyncio.wait([made], timeout=ENGINE_SETTLE_SECONDS)
                    if made.done() and not made.cancelled() and made.exception() is None:
                        kernel.container_id = made.result()
                    else:
                        made.cancel()
                    raise
                self._starting[kernel.container_id] = watch
                # No ledger write here: a crash before RUNNING cleans the kernel, and reconcile
                # finds its container by the kernel-id label without the id in the ledger.
                await self.backend.start(kernel.container_id)
                kernel.pid = (await self.backend.inspect(kernel.container_id)).pid
            await self._watch_ooms(kernel)
            await self._wait_ready(kernel, layout, watch)

    @contextlib.contextmanager
    def _start_watch(self, kernel: Kernel, layout: ScratchLayout) -> Iterator[_StartWatch]:
        """What wakes a create waiting for its container: the runner's ready signal (a FIFO
        opened before the container starts) and the container's exit (`on_container_exit`)."""
        watch = _StartWatch()
        if has_runner(kernel.image_labels):
            try:
                watch.signal = ReadySignal.open(layout.kernel_dir, _rel(layout, layout.ipc_dir),
                                                kernel.uid, kernel.gid, watch.wake.set)
            except OSError as exc:  # the kernel's user owns ipc/: it may have put a dir there
                log.warning("kernel %s: no ready signal (%s); asking the runner every %gs",
                            kernel.kernel_id, exc, ALIVE_CHECK_SECONDS)
        try:
            yield watch
        finally:
            if kernel.container_id and self._starting.get(kernel.container_id) is watch:
                del self._starting[kernel.container_id]
            if watch.signal is not None:
                watch.signal.close()

    def _plan(self, kernel: Kernel, layout: ScratchLayout) -> ContainerPlan:
        spec = kernel.spec
        port_map = {c: h for s in kernel.service_ports
                    for c, h in zip(s.container_ports, s.host_ports, strict=True)
                    if c not in kernel.tls_ports}
        mounts = self.mounts.plan(layout, [m.model_dump() for m in spec.mounts])
        return ContainerPlan(
            agent_id=self.s.agent_id, kernel_id=kernel.kernel_id, session_id=kernel.session_id,
            spec=spec, image_ref=spec.image.ref, image_labels=kernel.image_labels,
            uid=kernel.uid, gid=kernel.gid,
            resource_args=self.resource_args(kernel.kernel_id, spec,
                                             self.resources.container_args(kernel.allocation)),
            mounts=mounts, port_map=port_map, loopback_ports=kernel.tls_ports,
            bind_host=self.s.bind_host,
            pids_limit=self.s.pids_limit, nofile_limit=self.s.nofile_limit,
            service_ports_label=service_ports_label(kernel.service_ports), owned_env=self.s.policy.owned_environ,
            extra_env=cluster_environ(spec.cluster_info, spec.local_rank),
            default_env=cluster_default_environ(spec.cluster_info, spec.cluster_role,
                                                spec.hostname()),
            network_name=spec.cluster_info.network_name,
            network_aliases=(spec.hostname(),) if spec.cluster_info.network_name else (),
        )

    def resource_args(self, kernel_id: KernelId, spec: KernelSpec, share: Mapping[str, Any]
                      ) -> dict[str, Any]:
        """The kernel's resource fragment: ``share`` (the plugins', or a pool's shape), then
        every limit contributor's, through the one merge rule."""
        return merge_docker_args(share, *(c.docker_args(kernel_id, spec.resource_opts)
                                          for c in self.limits))

    def _container_config(self, kernel: Kernel, plan: ContainerPlan) -> dict[str, Any]:
        bootstrap = bool(kernel.spec.bootstrap_script)
        command = (runner_command(kernel.image_labels, bootstrap=bootstrap)
                   if has_runner(kernel.image_labels) else idle_command(bootstrap=bootstrap))
        return build_container_config(plan, command)

    def _prepare_files(self, kernel: Kernel, layout: ScratchLayout,
                       environ: Mapping[str, str]) -> None:
        self._write_kernel_files(kernel, layout, environ)
        self.scratch.unseal(kernel.kernel_id, kernel.uid, kernel.gid)
        if kernel.spec.bootstrap_script:
            nofollow.write_file(layout.kernel_dir, _rel(layout, layout.work_dir, "bootstrap.sh"),
                                kernel.spec.bootstrap_script.encode(), mode=0o755,
                                uid=kernel.uid, gid=kernel.gid, durable=False)

    def _write_kernel_files(self, kernel: Kernel, layout: ScratchLayout,
                            environ: Mapping[str, str]) -> None:
        """environ.txt, resource.txt, the ipc dir's owner, cluster and session keys (also
        what a claimed warm-pool container gets)."""
        spec = kernel.spec
        # The whole env, agent values included (as Backend.AI writes it): the runner loads it
        # over the container's env, so it must not carry the spec's values over the agent's.
        text = "".join(f"{k}={v}\n" for k, v in sorted(environ.items()))
        kdir = layout.kernel_dir
        # A kernel's own files go with its container: no fsync (the ledger is what is durable).
        nofollow.write_file(kdir, _rel(layout, layout.config_dir, "environ.txt"), text.encode(),
                            durable=False)
        nofollow.write_file(kdir, _rel(layout, layout.config_dir, "resource.txt"),
                            resource_txt(spec, _allocation_json(kernel.allocation)).encode(),
                            durable=False)
        with nofollow.open_dir(kdir, _rel(layout, layout.ipc_dir)) as ipc:
            os.fchown(ipc, kernel.uid, kernel.gid)
        write_ssh_files(layout.config_dir, spec.cluster_info, uid=kernel.uid, gid=kernel.gid)
        if (keypair := session_keypair(spec.internal_data)) is not None:
            write_session_keys(kdir, _rel(layout, layout.work_dir), keypair, uid=kernel.uid,
                               gid=kernel.gid, mount_paths=[m.kernel_path or f"/home/work/{m.name}"
                                                            for m in spec.mounts])

    async def _wait_ready(self, kernel: Kernel, layout: ScratchLayout,
                          watch: _StartWatch) -> None:
        if has_runner(kernel.image_labels):
            runner = self.runner_factory(layout.runner_socket)
            self.runners[kernel.kernel_id] = runner
            await self._until_ready(kernel, runner, watch)
            self._seal(kernel)
            return
        if kernel.spec.bootstrap_script:
            marker = _rel(layout, layout.ipc_dir, "bootstrap.exit")
            asked = time.monotonic()
            while not _is_file(layout.kernel_dir, marker):  # a cheap stat
                if watch.died or time.monotonic() - asked > ALIVE_CHECK_SECONDS:
                    watch.died, asked = False, time.monotonic()
                    await self._ensure_alive(kernel)
                await asyncio.sleep(0.05)

    def _seal(self, kernel: Kernel) -> None:
        """The runner's socket dir becomes root's: the kernel can no longer swap the socket."""
        try:
            st = self.scratch.seal(kernel.kernel_id)
        except OSError as exc:
            log.warning("kernel %s: cannot seal its runner socket directory: %s",
                        kernel.kernel_id, exc)
            return
        if st is None or not stat.S_ISSOCK(st.st_mode) or st.st_uid != kernel.uid:
            log.warning("kernel %s: its runner socket is missing or was replaced; the agent "
                        "connects only to a socket there, never through a link",
                        kernel.kernel_id)

    async def _until_ready(self, kernel: Kernel, runner: RunnerRole,
                           watch: _StartWatch) -> None:
        """Sleep until the runner's ready signal or the container's exit wakes us, then ask:
        the signal is only a wake-up (the kernel's user can write the FIFO), ``status`` on the
        runner's socket decides. Without any wake-up Docker and the runner are asked every
        ALIVE_CHECK_SECONDS (a lost events stream, a FIFO the kernel removed)."""
        while True:
            try:
                async with asyncio.timeout(ALIVE_CHECK_SECONDS):
                    await watch.wake.wait()
                woke = True
            except TimeoutError:
                woke = False
            watch.wake.clear()
            if watch.died or not woke:
                watch.died = False
                await self._ensure_alive(kernel)
            if await runner.probe_ready():
                return

    async def _ensure_alive(self, kernel: Kernel) -> None:
        assert kernel.container_id
        info = await self.backend.inspect(kernel.container_id)
        if not info.running:
            raise KernelStartupFailed(
                f"kernel {kernel.kernel_id}: container exited with {info.exit_code} before it "
                "was ready", kernel_id=kernel.kernel_id, exit_code=info.exit_code)

    def _tls_container_ports(self, kernel: Kernel) -> list[int]:
        """Container ports of HTTP services, when the agent terminates TLS for them."""
        if self.tls_proxy is None:
            return []
        return [c for s in kernel.service_ports if s.protocol == "http"
                for c in s.container_ports]

    async def _open_tls_routes(self, kernel: Kernel) -> None:
        if self.tls_proxy is None:
            return
        for decl in kernel.service_ports:
            for cport, hport in zip(decl.container_ports, decl.host_ports, strict=True):
                if cport in kernel.tls_ports:
                    await self.tls_proxy.add(f"{kernel.kernel_id}/{cport}", self.s.bind_host,
                                             hport, "127.0.0.1", kernel.tls_ports[cport])

    async def _close_tls_routes(self, kernel: Kernel) -> None:
        if self.tls_proxy is None:
            return
        for cport in kernel.tls_ports:
            await _quietly(self.tls_proxy.remove(f"{kernel.kernel_id}/{cport}"))

    # ---------------------------------------------------------------- restart
    async def restart(self, kernel_id: KernelId) -> dict[str, Any]:
        kernel = self.registry.get(kernel_id)
        if kernel.state != KernelState.RUNNING:
            raise KernelStateError(f"kernel {kernel_id} is {kernel.state}, not RUNNING",
                                   kernel_id=kernel_id)
        # The policy may have tightened since create (or since the kernel was adopted): a
        # refused restart leaves the running kernel as it is.
        check_kernel_spec(kernel.spec, self.s.policy)
        kernel.transition(KernelState.RESTARTING)
        log.info("kernel %s: RESTARTING", kernel_id)
        try:
            await self._as_work(kernel, lambda: self._phase(
                kernel, "restart", self.s.creating_timeout, self._recreate(kernel)))
        except BaseException as exc:
            if kernel.doomed is not None:  # destroyed meanwhile: no failure of the restart
                await asyncio.shield(self._terminate(kernel, *kernel.doomed))
                if isinstance(exc, asyncio.CancelledError) and not _cancelled_by_end(kernel):
                    raise
                raise KernelStateError(f"kernel {kernel_id} was ended during its restart "
                                       f"({kernel.doomed[0]})", kernel_id=kernel_id) from exc
            reason, detail = _failure_reason(exc)
            self.events.emit("agent_error", agent_error_payload(
                f"kernel {kernel_id}: restart failed, the kernel is terminated: {detail}",
                source="restart", exc=exc, user=_uuid_or_none(kernel.spec.owner_user_id),
                context={"kernel_id": kernel_id, "session_id": kernel.session_id,
                         "reason": str(reason)}))
            await asyncio.shield(self._terminate(kernel, reason, detail=detail))
            raise
        await self._write_ledger(kernel, KernelState.RUNNING)  # the new container, on disk first
        kernel.transition(KernelState.RUNNING)
        return {"container_id": kernel.container_id, "repl_in_port": 0, "repl_out_port": 0,
                "stdin_port": 0, "stdout_port": 0,
                "service_ports": service_ports_to_wire(kernel.service_ports)}

    async def _recreate(self, kernel: Kernel) -> None:
        assert kernel.container_id
        old = kernel.container_id
        await self._close_runner(kernel.kernel_id)
        await self._stop_and_remove(old)
        layout = self.layouts.get(kernel.kernel_id) or await self.scratch.open(kernel.kernel_id)
        self.layouts[kernel.kernel_id] = layout
        self.scratch.unseal(kernel.kernel_id, kernel.uid, kernel.gid)
        nofollow.unlink_at(layout.kernel_dir, _rel(layout, layout.ipc_dir, "bootstrap.exit"))
        config = self._container_config(kernel, self._plan(kernel, layout))
        await self._run_container(kernel, layout, config)

    # ---------------------------------------------------------------- destroy
    async def destroy(self, kernel_id: KernelId, reason: TerminationReason = R.USER_REQUESTED) -> None:
        kernel = self.registry.find(kernel_id)
        if kernel is None:
            if self.registry.ended(kernel_id) is not None:
                return  # already gone: destroying twice is not an error
            raise KernelNotFound(kernel_id=kernel_id)
        await self._terminate(kernel, reason)

    async def on_container_exit(self, container_id: str) -> None:
        """A container ended on its own (Docker ``die`` event or the periodic sync). Triggers
        that arrive while the same container is being judged are dropped: the first one
        decides (and logs) the exit once."""
        if (watch := self._starting.get(container_id)) is not None:
            watch.died = True  # a create or restart waiting for this container looks now
            watch.wake.set()
        if container_id in self._judging:
            return
        kernel = self.registry.by_container(container_id)
        self._judging.add(container_id)
        try:
            with logctx.bound(kernel_id=kernel.kernel_id if kernel else None,
                              session_id=kernel.session_id if kernel else None):
                await self._on_container_exit(container_id)
        finally:
            self._judging.discard(container_id)

    async def _on_container_exit(self, container_id: str) -> None:
        kernel = self.registry.by_container(container_id)
        if kernel is None or kernel.state in (KernelState.RESTARTING, KernelState.TERMINATING,
                                              KernelState.TERMINATED):
            return
        if kernel.state != KernelState.RUNNING:
            return  # creation notices a dead container itself and records why
        try:
            info = await self.backend.inspect(container_id)
        except ContainerNotFound:
            await self._terminate(kernel, R.CONTAINER_NOT_FOUND)
            return
        if info.running:
            return
        new_ooms = kernel.oom.new_at_exit(await self._final_oom_count(container_id, kernel.pid))
        reason = classify_exit(info.exit_code, info.oom_killed, new_ooms)
        log.warning("kernel %s: container exited by itself with %s (%s)", kernel.kernel_id,
                    info.exit_code, reason)
        detail = ""
        if self.s.restart_policy == "on-failure" and info.exit_code != 0:
            if kernel.auto_restarts < self.s.restart_max:
                await self._auto_restart(kernel, info.exit_code, reason)
                return
            detail = f"restart policy gave up after {kernel.auto_restarts} restart(s)"
            log.warning("kernel %s: %s", kernel.kernel_id, detail)
            self.on_auto_restart("gave-up")
        await self._terminate(kernel, reason, exit_code=info.exit_code, detail=detail)

    async def _auto_restart(self, kernel: Kernel, exit_code: int | None,
                            cause: TerminationReason) -> None:
        """``restart-policy = "on-failure"``: a new container for the same kernel (scratch,
        ports and allocation kept) after an exponential backoff; ``kernel_started`` with
        reason ``restarting`` when it runs, the kernel's end when it cannot."""
        kernel.auto_restarts += 1
        n = kernel.auto_restarts
        delay = min(self.s.restart_backoff_cap, self.s.restart_backoff_base * 2 ** (n - 1))
        kernel.transition(KernelState.RESTARTING)
        old = kernel.container_id
        log.warning("kernel %s: restarting its container in %.1fs (restart %d of %d; it exited "
                    "with %s, %s)", kernel.kernel_id, delay, n, self.s.restart_max, exit_code,
                    cause)
        if old:
            await self._ship_logs(kernel, old)
        await asyncio.sleep(delay)
        if kernel.state != KernelState.RESTARTING:
            return  # destroyed meanwhile: the teardown owns it now
        try:
            await self._as_work(kernel, lambda: self._phase(
                kernel, "restart", self.s.creating_timeout, self._recreate(kernel)))
        except asyncio.CancelledError:
            if kernel.doomed is None or not _cancelled_by_end(kernel):
                raise  # the agent stops: the kernel is left for the next start to judge
            await asyncio.shield(self._terminate(kernel, *kernel.doomed))
            return
        except Exception as exc:  # noqa: BLE001 - any failure ends the kernel, reported
            if kernel.doomed is not None:  # destroyed meanwhile: no failure of the restart
                await asyncio.shield(self._terminate(kernel, *kernel.doomed))
                return
            reason, detail = _failure_reason(exc)
            self.on_auto_restart("failed")
            self.events.emit("agent_error", agent_error_payload(
                f"kernel {kernel.kernel_id}: automatic restart {n} failed, the kernel is "
                f"terminated: {detail}", source="restart", exc=exc,
                user=_uuid_or_none(kernel.spec.owner_user_id),
                context={"kernel_id": kernel.kernel_id, "session_id": kernel.session_id,
                         "reason": str(reason), "policy": self.s.restart_policy}))
            await asyncio.shield(self._terminate(kernel, reason, detail=detail))
            return
        await self._write_ledger(kernel, KernelState.RUNNING)  # the new container, on disk first
        kernel.transition(KernelState.RUNNING)
        self.on_auto_restart("restarted")
        log.info("kernel %s: RUNNING again (container %s, restart %d)", kernel.kernel_id,
                 (kernel.container_id or "")[:12], n)
        self._emit("kernel_started", kernel, reason="restarting",
                   creation_info=self._creation_info(kernel))

    async def _terminate(self, kernel: Kernel, reason: TerminationReason,
                         detail: str = "", *, exit_code: int | None = None) -> None:
        """End the kernel (once: a second end awaits the first, an ended kernel stays ended).
        A create or restart under way is cancelled first, and the end waits for it."""
        if await self._stop_work(kernel, reason, detail) and kernel.doomed is not None:
            reason, detail = kernel.doomed
        if kernel.state == KernelState.TERMINATED:
            return
        task = self._teardowns.get(kernel.kernel_id)
        if task is None:
            with logctx.bound(kernel_id=kernel.kernel_id, session_id=kernel.session_id):
                task = self._tasks.spawn(  # the task keeps the context it was spawned in
                    self._teardown(kernel, reason, exit_code, detail),
                    name=f"teardown-{kernel.kernel_id}")
            self._teardowns[kernel.kernel_id] = task
            # A teardown that failed half-way must not pin its task (and kernel) forever.
            kid = kernel.kernel_id
            task.add_done_callback(lambda done: self._drop_teardown(kid, done))
        await asyncio.shield(task)

    async def _teardown(self, kernel: Kernel, reason: TerminationReason, exit_code: int | None,
                        detail: str) -> None:
        if kernel.state != KernelState.TERMINATING:
            kernel.transition(KernelState.TERMINATING)
        log.info("kernel %s: TERMINATING (%s)", kernel.kernel_id, reason)
        try:
            async with asyncio.timeout(self.s.terminating_timeout):
                exit_code = await self._release_container(kernel, exit_code)
        except TimeoutError:
            log.error("kernel %s: TERMINATING exceeded %gs; removing by force",
                      kernel.kernel_id, self.s.terminating_timeout)
            detail = detail or "terminating deadline exceeded"
            if kernel.container_id:  # bounded too: a hung engine must not hold the caller;
                # a container left behind has no kernel any more, and the sync removes it
                await _quietly(asyncio.wait_for(self.backend.remove(kernel.container_id),
                                                self.s.terminating_timeout))
        await self._close_runner(kernel.kernel_id)
        await self._close_tls_routes(kernel)
        # A ledger write another task started (an OOM noted, a create's last step) may still
        # be queued on the writer thread: let it land before the directory goes.
        with contextlib.suppress(RuntimeError):  # the lifecycle closed: its writer with it
            await asyncio.get_running_loop().run_in_executor(self._ledger_writer, _nothing)
        await _quietly(self.scratch.remove(kernel.kernel_id))
        self.layouts.pop(kernel.kernel_id, None)
        self._release_resources(kernel)
        kernel.termination = Termination(reason, exit_code if exit_code is not None else -1,
                                         detail, time.time())
        kernel.transition(KernelState.TERMINATED)
        async with self.registry.lock:
            self.registry.retire(kernel)
        self._teardowns.pop(kernel.kernel_id, None)
        kernel.terminated.set()
        self._kernel_gone(kernel.kernel_id)
        log.info("kernel %s: TERMINATED (%s, exit %s)", kernel.kernel_id, reason,
                 kernel.termination.exit_code)
        self._emit("kernel_terminated", kernel, reason=str(reason),
                   exit_code=kernel.termination.exit_code)

    def _drop_teardown(self, kernel_id: KernelId, task: asyncio.Task[None]) -> None:
        if self._teardowns.get(kernel_id) is task:
            del self._teardowns[kernel_id]

    def _kernel_gone(self, kernel_id: KernelId) -> None:
        self.routes.forget(kernel_id)

    async def _release_container(self, kernel: Kernel, exit_code: int | None) -> int | None:
        """One engine request, as ``docker rm -f``: the container is killed if it still runs
        and removed; the engine's answer gives its exit code (137 for the kill; a code already
        judged wins) and, with a log sink, its output for the Manager (the backend reads it
        without another blocking request where it can). No SIGTERM and grace: the runner's own
        shutdown SIGKILLs the user's code anyway, and the scratch goes next."""
        cid = kernel.container_id
        if not cid:
            return exit_code
        try:
            removed = await self.backend.kill_and_remove(
                cid, logs_tail=LOG_TAIL if self.log_sink is not None else None)
        except ContainerNotFound:
            return exit_code
        except BackendError as exc:  # a failed removal must not leave the kernel TERMINATING
            log.warning("kernel %s: removing its container failed (%s); trying once more",
                        kernel.kernel_id, exc)
            await _quietly(self.backend.remove(cid))
            return exit_code
        if removed.logs is not None:
            await self._ship_logs(kernel, cid, removed.logs)
        return exit_code if exit_code is not None else removed.exit_code

    async def _ship_logs(self, kernel: Kernel, container_id: str,
                         logs: str | None = None) -> None:
        """Hand the container's output (asked of the engine unless given) to the Manager before
        the kernel's end is told (bounded)."""
        if self.log_sink is None:
            return
        try:
            async with asyncio.timeout(5.0):
                if logs is None:
                    logs = await self.backend.logs(container_id, tail=LOG_TAIL)
                await self.log_sink(kernel.kernel_id, container_id, logs)
        except (BerthError, TimeoutError) as exc:
            log.warning("kernel %s: its logs could not be shipped: %s", kernel.kernel_id, exc)

    def _release_resources(self, kernel: Kernel) -> None:
        for ports in kernel.host_ports.values():
            for port in ports:
                self.ports.release(port)
        kernel.host_ports = {}
        for port in kernel.tls_ports.values():
            self.ports.release(port)
        kernel.tls_ports = {}
        if kernel.allocation is not None:
            self.resources.free(kernel.kernel_id)

    async def _stop_and_remove(self, container_id: str) -> None:
        try:
            await self.backend.stop(container_id, grace=self.s.stop_grace)
            await self.backend.remove(container_id)
        except ContainerNotFound:
            pass

    async def _close_runner(self, kernel_id: KernelId) -> None:
        runner = self.runners.pop(kernel_id, None)
        if runner is not None:
            await _quietly(runner.close())

    # ---------------------------------------------------------------- adoption
    async def adopt(self, entry: LedgerEntry, layout: ScratchLayout, pid: int) -> Kernel:
        """Take back a live kernel after an agent restart: same container, ports, allocation."""
        spec = KernelSpec.model_validate(entry.spec)
        allocation = KernelAllocation.from_json(entry.allocation)  # InvalidArgument if malformed
        kernel = Kernel(kernel_id=KernelId(entry.kernel_id), session_id=entry.session_id, spec=spec,
                        uid=entry.uid, gid=entry.gid, state=KernelState.RUNNING,
                        created_at=entry.created_at, container_id=entry.container_id, pid=pid,
                        image_id=entry.image_id, allocation=allocation,
                        host_ports={k: list(v) for k, v in entry.host_ports.items()},
                        service_ports=service_ports_from_wire(
                            entry.extra.get("service_ports", [])),
                        image_labels=dict(entry.extra.get("image_labels", {})),
                        tls_ports={int(c): int(h) for c, h in
                                   entry.extra.get("tls_ports", {}).items()})
        self.resources.restore(kernel.kernel_id, allocation)
        await self._watch_ooms(kernel, int(entry.extra.get("oom_kills_survived", 0)))
        for port in [*(p for ps in kernel.host_ports.values() for p in ps),
                     *kernel.tls_ports.values()]:
            self.ports.discard(port)
        await self._open_tls_routes(kernel)
        self.registry.add(kernel)
        self.layouts[kernel.kernel_id] = layout
        if has_runner(kernel.image_labels):
            self._seal(kernel)
            self.runners[kernel.kernel_id] = self.runner_factory(layout.runner_socket)
        return kernel

    # ---------------------------------------------------------------- OOM kills, worker deaths
    async def _oom_count(self, container_id: str, pid: int) -> int | None:
        if self.oom_counter is None:
            return None
        return await self.oom_counter.oom_kills(container_id, pid)

    async def _final_oom_count(self, container_id: str, pid: int) -> int | None:
        """The counter at the container's end: read now, else the last stats reading."""
        count = await self._oom_count(container_id, pid)
        if count is None and self.oom_counter is not None:
            count = self.oom_counter.last_oom_kills(container_id)
        return count

    async def _watch_ooms(self, kernel: Kernel, survived: int = 0) -> None:
        """A new container (or an adopted one): count only the OOM kills from now on."""
        assert kernel.container_id
        kernel.oom = OomWatch.start(await self._oom_count(kernel.container_id, kernel.pid),
                                    survived)
        kernel.worker_exits_seen = 0

    def on_container_oom(self, container_id: str) -> None:
        """Docker reported an OOM in a container; judged once it has had time to settle."""
        kernel = self.registry.by_container(container_id)
        if kernel is None or kernel.state != KernelState.RUNNING:
            return
        if kernel.oom.on_oom_event():
            with logctx.bound(kernel_id=kernel.kernel_id, session_id=kernel.session_id):
                self._tasks.spawn(self._judge_oom(kernel, container_id),
                                  name=f"oom-{kernel.kernel_id}")

    async def _judge_oom(self, kernel: Kernel, container_id: str) -> None:
        await asyncio.sleep(OOM_SETTLE_SECONDS)
        if kernel.container_id != container_id or kernel.state != KernelState.RUNNING:
            return
        try:
            running = (await self.backend.inspect(container_id)).running
        except BerthError:
            return
        if not running:
            return  # the OOM ended the main process: on_container_exit reads it as pending
        count = await self._oom_count(container_id, kernel.pid)
        survived = kernel.oom.survive(count)
        log.warning("kernel %s: the OOM killer ended %d process(es) in its container "
                    "(memory limit %s, oom_kill count %s); its main process runs on",
                    kernel.kernel_id, survived, kernel.spec.mem, count)
        await self._write_ledger(kernel)

    async def on_worker_exit(self, kernel_id: KernelId, report: Mapping[str, Any]) -> None:
        """The runner's code worker (the interpreter running user code) died during a run:
        an OOM kill or a SIGBUS (a full ``/dev/shm``) is told to the Manager as a warning
        ``agent_error``, counted, and logged; the kernel stays RUNNING."""
        kernel = self.registry.find(kernel_id)
        if kernel is None or kernel.state != KernelState.RUNNING or not kernel.container_id:
            return
        seq = int(report.get("seq") or 0)
        if seq <= kernel.worker_exits_seen:
            return  # already handled (a repeated reply of the same finished run)
        kernel.worker_exits_seen = seq
        code = report.get("code")
        reason: TerminationReason | None = None
        if code == -signal.SIGBUS:
            reason = R.SHM_EXHAUSTED
        elif code == -signal.SIGKILL and not report.get("killed_by_runner"):
            count = await self._oom_count(kernel.container_id, kernel.pid)
            if kernel.oom.worker_oom(count):
                reason = R.OOM_KILLED
        if reason is None:
            log.info("kernel %s: its code worker exited with %s", kernel_id, code)
            return
        self._report_worker_death(kernel, reason, code)

    def _report_worker_death(self, kernel: Kernel, reason: TerminationReason,
                             code: Any) -> None:
        spec = kernel.spec
        if reason == R.OOM_KILLED:
            cause = "was killed by the out-of-memory killer"
            limit = f"memory limit {spec.mem}"
        else:
            cause = "died of SIGBUS, /dev/shm is full"
            limit = f"/dev/shm size {spec.resource_opts.get('shmem', 'default')}"
        message = (f"kernel {kernel.kernel_id}: the code interpreter {cause} ({limit}); "
                   "its variables are lost and it restarts with the next run")
        log.warning("%s", message)
        self.on_worker_death(str(reason))
        self.events.emit("agent_error", {
            "message": message, "severity": "WARNING", "user": _uuid_or_none(spec.owner_user_id),
            "context_env": {"kernel_id": kernel.kernel_id, "session_id": kernel.session_id,
                            "source": "code-worker", "reason": str(reason),
                            "exit_code": str(code)},
        })

    # ---------------------------------------------------------------- helpers
    async def _write_ledger(self, kernel: Kernel, state: KernelState | None = None) -> None:
        """The kernel's ledger as it is now (in ``state`` if given), durable (fsynced) when this
        returns. A kernel is written RUNNING before it becomes RUNNING in the registry: the
        Manager or a status call may see RUNNING, and a crash right after must not lose it."""
        await self.write_durably(self.ledger, self._ledger_entry(kernel, state))

    async def write_durably(self, ledger: Ledger, entry: LedgerEntry) -> None:
        """``entry`` in ``ledger`` (the kernels' or the warm pool's), fsynced when this returns.
        The writes go through one thread in call order, so a later state never lands before an
        earlier one, and the event loop never waits on the disk (10+ ms an fsync while
        containers start)."""
        payload = ledger.encode(entry)  # here: the kernel's dicts change on this thread
        written = asyncio.get_running_loop().run_in_executor(
            self._ledger_writer, ledger.write_encoded, entry.kernel_id, payload)
        try:
            await asyncio.shield(written)
        except asyncio.CancelledError:
            # A deadline or a destroy cancelled the caller: the write goes on in its thread,
            # and the teardown that follows must not remove the kernel's directory under it.
            await asyncio.wait([written])
            if not written.cancelled() and (exc := written.exception()) is not None:
                log.warning("kernel %s: ledger write of a cancelled step failed: %s",
                            entry.kernel_id, exc)
            raise

    def _ledger_entry(self, kernel: Kernel, state: KernelState | None = None) -> LedgerEntry:
        return LedgerEntry(
            kernel_id=kernel.kernel_id, session_id=kernel.session_id, agent_id=self.s.agent_id,
            spec=kernel.spec.model_dump(mode="json"),
            allocation=_allocation_json(kernel.allocation),
            host_ports=kernel.host_ports, uid=kernel.uid, gid=kernel.gid,
            state=str(state or kernel.state), container_id=kernel.container_id,
            created_at=kernel.created_at, image_id=kernel.image_id,
            extra={"service_ports": service_ports_to_wire(kernel.service_ports),
                   "image_labels": kernel.image_labels,
                   "tls_ports": {str(c): h for c, h in kernel.tls_ports.items()},
                   "oom_kills_survived": kernel.oom.survived},
        )

    def creation_result(self, kernel: Kernel) -> dict[str, Any]:
        return {
            "id": kernel.kernel_id, "kernel_host": self.s.kernel_host,
            "repl_in_port": 0, "repl_out_port": 0, "stdin_port": 0, "stdout_port": 0,
            "service_ports": service_ports_to_wire(kernel.service_ports),
            "container_id": kernel.container_id,
            "resource_spec": {"slots": {k: str(v) for k, v in kernel.spec.resource_slots.items()},
                              "allocations": _allocation_json(kernel.allocation)},
            "attached_devices": {}, "agent_addr": self.s.agent_addr,
            "scaling_group": self.s.scaling_group,
        }

    def _creation_info(self, kernel: Kernel) -> dict[str, Any]:
        return {"container_id": kernel.container_id, "kernel_host": self.s.kernel_host,
                "repl_in_port": 0, "repl_out_port": 0,
                "service_ports": service_ports_to_wire(kernel.service_ports),
                "used_devices": used_devices(kernel.allocation)}

    def _emit(self, name: str, kernel: Kernel, **payload: Any) -> None:
        body = {"kernel_id": kernel.kernel_id, "session_id": kernel.session_id, **payload}
        self.events.emit(name, body, broadcast=True)

    async def close(self) -> None:
        """Stop watching; kernels keep running (a restarted agent adopts them)."""
        await self._tasks.close()
        for kernel_id in list(self.runners):
            await self._close_runner(kernel_id)
        self._ledger_writer.shutdown(wait=False)  # what is queued is still written


def _nothing() -> None:
    """A no-op for the ledger's one writer thread: done once every write before it is."""


def _rel(layout: ScratchLayout, directory: Path, *names: str) -> tuple[str, ...]:
    """Components of a scratch path below the kernel dir, for `storage.nofollow`."""
    return directory.relative_to(layout.kernel_dir).parts + names


def _is_file(base: Path, rel: tuple[str, ...]) -> bool:
    """A regular file there (a link in its place, or on the way, is not one)."""
    try:
        st = nofollow.lstat_at(base, rel)
    except OSError:
        return False
    return st is not None and stat.S_ISREG(st.st_mode)


_CREATING_STATES = (KernelState.PREPARING, KernelState.PULLING, KernelState.CREATING)


def _cancelled_by_end(kernel: Kernel) -> bool:
    """Whether a create's or restart's cancellation was an end of the kernel's (a destroy)
    alone, not also of the caller's own task (an RPC deadline, the agent stopping)."""
    task = asyncio.current_task()
    return kernel.doomed is not None and (task is None or task.cancelling() == 0)


def _failure_reason(exc: BaseException) -> tuple[TerminationReason, str]:
    if isinstance(exc, DeadlineExceeded):
        return R.DEADLINE, str(exc)
    if isinstance(exc, asyncio.CancelledError):
        return R.FAILED_TO_CREATE, "creation cancelled"
    if isinstance(exc, KernelStartupFailed):
        return R.FAILED_TO_START, str(exc)
    return R.FAILED_TO_CREATE, f"{type(exc).__name__}: {exc}"


async def _quietly(work: Awaitable[Any]) -> None:
    try:
        await work
    except Exception as exc:  # noqa: BLE001 - cleanup goes on; the next reconcile retries what failed
        log.warning("cleanup step failed: %r", exc)


def used_devices(allocation: KernelAllocation | None) -> dict[str, Any]:
    """The manager's ``UsedDevices`` from an allocation: ``{"units": {plugin key:
    {device id: {"used": {slot: amount}, ...}}}}``, devices holding nothing left out."""
    units: dict[str, dict[str, Any]] = {}
    for key, per_slot in (allocation.devices if allocation is not None else {}).items():
        for slot, per_device in per_slot.items():
            for device, amount in per_device.items():
                if amount <= 0:
                    continue
                unit = units.setdefault(key, {}).setdefault(str(device), {
                    "model_name": None, "used": {}, "processing_units": None,
                    "memory_size": None})
                unit["used"][str(slot)] = str(amount)
    return {"units": units}


def _allocation_json(allocation: KernelAllocation | None) -> dict[str, Any]:
    """The allocation's wire form (ledger, RPC reply, resource.txt); ``{}`` for none."""
    return allocation.to_json() if allocation is not None else {}


def _uuid_or_none(value: str | None) -> str | None:
    """A user id the Manager can file an error under (its users are UUIDs), else None."""
    try:
        return str(uuid.UUID(value)) if value else None
    except ValueError:
        return None
