"""The RPC surface: one async method per Backend.AI method name (reference §1.2), thin.

Every method accepts the ``agent_id`` keyword the Manager sends. Arguments are validated by
:mod:`berth.rpc.handlers` against these annotations before a method runs; business logic lives
in the lifecycle and the subsystems, not here.
"""

from __future__ import annotations

import asyncio
import logging
import math
import platform
import time
from collections.abc import Coroutine, Sequence
from typing import TYPE_CHECKING, Any, Protocol

from berth import __version__
from berth.backend import ContainerBackend
from berth.config import AgentConfig
from berth.errors import AgentIdMismatch, InvalidArgument, KernelNotFound, KernelStateError
from berth.events import ManagerLink
from berth.images import ImageCommitService, ImageService
from berth.kernel import (
    ExecRoutes,
    Kernel,
    KernelLifecycle,
    KernelRegistry,
    Reconciler,
    run_batch_job,
)
from berth.network import LocalNetworks, PortPool
from berth.resources import ResourceManager
from berth.runner import WORKER_EXIT
from berth.storage import KernelFiles, VFolderHostResolver, list_files_reply, parse_mounts
from berth.telemetry import Telemetry
from berth.types import KernelId, KernelState, TerminationReason

if TYPE_CHECKING:
    from berth.daemon.agent import Agent

__all__ = ["AgentFacade", "DaemonControl"]

log = logging.getLogger(__name__)


def _kid(raw: object) -> KernelId:
    """A kernel id off the wire (a manager may send a UUID object) as the domain's KernelId."""
    return KernelId(str(raw))


class DaemonControl(Protocol):
    """What the RPC surface may see and ask of the process: readiness, stop, owned work."""

    @property
    def ready(self) -> bool: ...

    @property
    def started_at(self) -> float: ...

    def request_stop(self) -> None: ...

    def spawn(self, coro: Coroutine[Any, Any, Any], *, name: str) -> None: ...


class AgentFacade:
    """Holds its collaborators, nothing else: every value it answers with is read from them."""

    def __init__(self, *, agent_id: str, config: AgentConfig, daemon: DaemonControl,
                 backend: ContainerBackend, registry: KernelRegistry,
                 lifecycle: KernelLifecycle, reconciler: Reconciler, routes: ExecRoutes,
                 resources: ResourceManager, telemetry: Telemetry, link: ManagerLink,
                 images: ImageService, commits: ImageCommitService, networks: LocalNetworks,
                 ports: PortPool, vfolder_hosts: VFolderHostResolver) -> None:
        self.agent_id = agent_id
        self.config = config
        self.daemon = daemon
        self.backend = backend
        self.registry = registry
        self.lifecycle = lifecycle
        self.reconciler = reconciler
        self.routes = routes
        self.resources = resources
        self.telemetry = telemetry
        self.link = link
        self.images = images
        self.commits = commits
        self.networks = networks
        self.ports = ports
        self.vfolder_hosts = vfolder_hosts

    @classmethod
    def of(cls, agent: Agent) -> AgentFacade:
        """The RPC surface over a started agent's parts."""
        p = agent.parts
        return cls(agent_id=agent.agent_id, config=agent.config, daemon=agent,
                   backend=agent.backend, registry=agent.registry, lifecycle=p.lifecycle,
                   reconciler=p.reconciler, routes=p.routes, resources=p.resources,
                   telemetry=p.telemetry, link=p.link, images=p.images,
                   commits=p.commits, networks=p.networks, ports=p.ports,
                   vfolder_hosts=p.vfolder_hosts)

    # ---------------------------------------------------------------- helpers
    def _check_agent(self, agent_id: str | None) -> None:
        if agent_id is not None and agent_id != self.agent_id:
            raise AgentIdMismatch(f"this is agent {self.agent_id}, not {agent_id}",
                                  agent_id=agent_id)

    def _kernel(self, kernel_id: str, agent_id: str | None) -> Kernel:
        self._check_agent(agent_id)
        kernel = self.registry.find(_kid(kernel_id))
        if kernel is None:
            raise KernelNotFound(kernel_id=kernel_id)
        return kernel

    def _files(self, kernel: Kernel) -> KernelFiles:
        layout = self.lifecycle.layouts.get(kernel.kernel_id)
        if layout is None:
            raise KernelNotFound(kernel_id=kernel.kernel_id)
        api = self.config.api
        mounts = parse_mounts([m.model_dump() for m in kernel.spec.mounts],
                              self.config.container.vfolder_allowed_roots)
        return KernelFiles(layout.work_dir, mounts=mounts, uid=kernel.uid, gid=kernel.gid,
                           max_upload_bytes=api.max_upload_size,
                           max_download_bytes=api.max_download_size)

    # ---------------------------------------------------------------- agent
    async def ping(self, msg: str = "ping", agent_id: str | None = None) -> str:
        return msg

    async def health(self, agent_id: str | None = None) -> dict[str, Any]:
        self._check_agent(agent_id)
        docker_ok = await self.backend.ping()
        now = time.time()
        return {
            "status": "ok" if docker_ok and self.daemon.ready else "degraded",
            "version": __version__, "component": "agent",
            "connectivity": {
                "overall_healthy": docker_ok,
                "connectivity_checks": [{"service_group": "container", "component_id": "docker",
                                         "is_healthy": docker_ok, "last_checked_at": now}],
                "timestamp": now,
            },
        }

    async def gather_hwinfo(self, agent_id: str | None = None) -> dict[str, Any]:
        self._check_agent(agent_id)
        info: dict[str, Any] = {}
        res = self.resources
        for plugin in res.plugins:
            try:
                hw = await plugin.get_node_hwinfo()
            except NotImplementedError:
                continue
            except Exception as exc:  # noqa: BLE001 - a broken plugin reports, never fails the call
                info[plugin.key] = {"status": "unavailable", "status_info": repr(exc),
                                    "metadata": {}}
                continue
            # The hardware stays as it is (cores: 2); the slots reported are overcommitted.
            ratios = {f"{slot}_overcommit_ratio": str(ratio) for slot, _ in plugin.slot_types
                      if (ratio := res.overcommit_ratio(slot)) != 1}
            info[plugin.key] = ({**hw, "metadata": {**(hw.get("metadata") or {}), **ratios}}
                                if ratios else hw)
        return info

    async def scan_gpu_alloc_map(self, agent_id: str | None = None) -> dict[str, str]:
        self._check_agent(agent_id)
        return self.resources.scan_gpu_alloc_map()

    async def get_status(self, agent_id: str | None = None) -> dict[str, Any]:
        self._check_agent(agent_id)
        _, views = self.registry.snapshot()
        res, telemetry = self.resources, self.telemetry
        return {
            "agent_id": self.agent_id, "version": __version__,
            "architecture": platform.machine(), "ready": self.daemon.ready,
            "uptime": round(time.time() - self.daemon.started_at, 3),
            "slots": {
                "total": {k: str(v) for k, v in res.total_slots().items()},
                "used": {k: str(v) for k, v in res.used_slots().items()},
                "available": {k: str(v) for k, v in res.available_slots().items()},
            },
            "kernels": [{**v.to_json(), "stats": telemetry.kernel_stats(v.kernel_id)}
                        for v in views],
            "node_stats": telemetry.node_stats(),
            "events": {"pending": self.link.emitter.pending,
                       "dropped": self.link.emitter.dropped},
            "bgtasks": self.link.tasks.snapshot(),
        }

    async def get_local_config(self, agent_id: str | None = None) -> dict[str, Any]:
        self._check_agent(agent_id)
        return {"agent": {"abuse-report-path": None, "id": self.agent_id},
                "watcher": {"service-addr": self.config.watcher.service_addr}}

    async def assign_port(self, agent_id: str | None = None) -> int:
        self._check_agent(agent_id)
        return self.ports.assign_port()

    async def release_port(self, port_no: int, agent_id: str | None = None) -> None:
        self._check_agent(agent_id)
        self.ports.release(port_no)

    async def reset_agent(self, agent_id: str | None = None) -> None:
        self._check_agent(agent_id)
        for kernel in list(self.registry.live()):
            await self.lifecycle.destroy(kernel.kernel_id, TerminationReason.AGENT_RESET)

    async def shutdown_agent(self, terminate_kernels: bool = False,
                             agent_id: str | None = None) -> None:
        self._check_agent(agent_id)
        if terminate_kernels:
            await self.reset_agent()
        self.daemon.request_stop()

    # ---------------------------------------------------------------- images
    async def check_and_pull(self, image_configs: dict[str, dict[str, Any]],
                             agent_id: str | None = None) -> dict[str, str]:
        self._check_agent(agent_id)
        return await self.images.check_and_pull(image_configs)

    async def purge_images(self, image_canonicals: list[str], force: bool = False,
                           noprune: bool = False, agent_id: str | None = None) -> dict[str, Any]:
        self._check_agent(agent_id)
        result = await self.images.purge_images(image_canonicals, force=force)
        responses = [{"image": ref, "error": None} for ref in result.removed]
        responses += [{"image": ref, "error": err} for ref, err in result.failed.items()]
        return {"responses": responses}

    # ---------------------------------------------------------------- kernels
    async def create_kernels(
        self, raw_session_id: str, raw_kernel_ids: list[str], raw_configs: list[dict[str, Any]],
        raw_cluster_info: dict[str, Any] | None = None,
        kernel_image_refs: dict[Any, Any] | None = None, agent_id: str | None = None,
    ) -> list[dict[str, Any]]:
        self._check_agent(agent_id)
        if len(raw_kernel_ids) != len(raw_configs):
            raise InvalidArgument("raw_kernel_ids and raw_configs differ in length",
                                  field="raw_configs")
        if len({str(k) for k in raw_kernel_ids}) != len(raw_kernel_ids):
            # refused whole: the second create of an id would fail while the first runs on
            raise InvalidArgument("raw_kernel_ids names a kernel more than once",
                                  field="raw_kernel_ids")
        cluster = dict(raw_cluster_info) if raw_cluster_info is not None else None

        async def create_one(kid: str, config: dict[str, Any]) -> dict[str, Any]:
            if cluster is not None and isinstance(config, dict):
                config = {**config, "cluster_info": cluster}
            if VFolderHostResolver.any_needed(config):  # by volumes config / storage proxy
                config = await self.vfolder_hosts.resolve_config(config)
            return await self.lifecycle.create(config, _kid(kid), str(raw_session_id))

        # All at once (the lifecycle's semaphore bounds the concurrency): a failing kernel
        # must not keep the others from being created and reporting their own events.
        outcomes = await asyncio.gather(
            *(create_one(k, c) for k, c in zip(raw_kernel_ids, raw_configs, strict=True)),
            return_exceptions=True)
        failed = [(k, o) for k, o in zip(raw_kernel_ids, outcomes, strict=True)
                  if isinstance(o, BaseException)]
        for kid, exc in failed[1:]:
            log.warning("kernel %s of session %s failed too: %r", kid, raw_session_id, exc)
        if failed:
            raise failed[0][1]
        return [o for o in outcomes if not isinstance(o, BaseException)]

    async def create_local_network(self, network_name: str,
                                   agent_id: str | None = None) -> None:
        """The bridge a multi-kernel single-node session's kernels share (idempotent)."""
        self._check_agent(agent_id)
        await self.networks.create(network_name)

    async def destroy_local_network(self, network_ref_name: str,
                                    agent_id: str | None = None) -> None:
        """Remove it; a network already gone is success."""
        self._check_agent(agent_id)
        await self.networks.destroy(network_ref_name)

    async def create_kernel(self, session_id: str, kernel_id: str, config: dict[str, Any],
                            cluster_info: dict[str, Any] | None = None,
                            agent_id: str | None = None) -> dict[str, Any]:
        """The seed's single-kernel create."""
        self._check_agent(agent_id)
        return await self.lifecycle.create(config, _kid(kernel_id), str(session_id))

    async def destroy_kernel(self, kernel_id: str, session_id: str | None = None,
                             reason: str | None = None, suppress_events: bool = False,
                             agent_id: str | None = None) -> None:
        self._check_agent(agent_id)
        why = TerminationReason(reason) if reason in set(TerminationReason) else (
            TerminationReason.USER_REQUESTED)
        await self.lifecycle.destroy(_kid(kernel_id), why)

    async def restart_kernel(self, session_id: str, kernel_id: str, kernel_image: Any = None,
                             updated_config: dict[str, Any] | None = None,
                             agent_id: str | None = None) -> dict[str, Any]:
        kernel = self._kernel(kernel_id, agent_id)
        return await self.lifecycle.restart(kernel.kernel_id)

    async def check_running(self, kernel_id: str, agent_id: str | None = None) -> bool:
        kernel = self.registry.find(_kid(kernel_id))
        return kernel is not None and kernel.state == KernelState.RUNNING

    async def check_creating(self, kernel_id: str, agent_id: str | None = None) -> bool:
        kernel = self.registry.find(_kid(kernel_id))
        return kernel is not None and kernel.state in (
            KernelState.PREPARING, KernelState.PULLING, KernelState.CREATING)

    async def check_pulling(self, image_name: str, agent_id: str | None = None) -> bool:
        return any(k.state == KernelState.PULLING and k.spec.image.canonical == image_name
                   for k in self.registry.live())

    async def get_logs(self, kernel_id: str, agent_id: str | None = None) -> dict[str, str]:
        kernel = self._kernel(kernel_id, agent_id)
        if not kernel.container_id:
            return {"logs": ""}
        return {"logs": await self.backend.logs(kernel.container_id)}

    async def sync_kernel_registry(self, raw_kernel_session_ids: Sequence[Sequence[str]],
                                   agent_id: str | None = None) -> None:
        """Align with the Manager's view: kernels it names that this node does not run are
        reported already-terminated; kernels this node runs that it does not name are ended."""
        self._check_agent(agent_id)
        await self.reconciler.align_with_manager(raw_kernel_session_ids)

    # ---------------------------------------------------------------- customised images
    async def commit(self, kernel_id: str, email: str, *, canonical: str | None = None,
                     extra_labels: dict[str, str] | None = None, filename: str | None = None,
                     agent_id: str | None = None) -> dict[str, str]:
        """Commit the kernel's container (to ``canonical`` and/or a file) as a background task."""
        kernel = self._kernel(kernel_id, agent_id)
        if kernel.state != KernelState.RUNNING or not kernel.container_id:
            raise KernelStateError(f"kernel {kernel_id} is {kernel.state}, not RUNNING",
                                   kernel_id=kernel_id)
        task_id = self.commits.start_commit(
            kernel_id=kernel.kernel_id, container_id=kernel.container_id, subdir=email,
            base_image=kernel.spec.image.canonical, image_labels=kernel.image_labels,
            canonical=canonical, extra_labels=extra_labels, filename=filename)
        return {"bgtask_id": task_id, "kernel": kernel.kernel_id,
                "path": str(self.commits.commit_root / email)}

    async def get_commit_status(self, kernel_id: str, subdir: str = "",
                                agent_id: str | None = None) -> dict[str, str]:
        self._check_agent(agent_id)
        return {"kernel": kernel_id, "status": self.commits.status(kernel_id)}

    async def push_image(self, image_ref: Any, registry: dict[str, Any] | None = None,
                         agent_id: str | None = None) -> dict[str, str]:
        """Push a local image to its registry as a background task."""
        self._check_agent(agent_id)
        task_id = self.commits.start_push(image_ref, registry)
        return {"bgtask_id": task_id}

    # ---------------------------------------------------------------- code and services
    async def execute(self, session_id: str, kernel_id: str, api_version: int, run_id: str | None,
                      mode: str, code: str, opts: dict[str, Any] | None = None,
                      flush_timeout: float | None = None,
                      agent_id: str | None = None) -> dict[str, Any]:
        kernel = self._kernel(kernel_id, agent_id)
        if mode not in ("query", "batch", "input", "continue"):
            raise InvalidArgument(f"unknown execution mode {mode!r}", field="mode")
        runner = self.routes.runner(kernel)
        result = await runner.execute(run_id=run_id, mode=mode, code=code,
                                      opts=_execute_opts(mode, opts),
                                      flush_timeout=flush_timeout, api_version=api_version)
        result.setdefault("files", [])
        worker_exit = result.pop(WORKER_EXIT, None)
        if worker_exit:
            await self.lifecycle.on_worker_exit(kernel.kernel_id, worker_exit)
        return dict(result)

    async def trigger_batch_execution(self, session_id: str, kernel_id: str, code: str,
                                      timeout_seconds: float | None = None,
                                      agent_id: str | None = None) -> None:
        """Start the batch job and return at once; its end arrives as session_* events."""
        kernel = self._kernel(kernel_id, agent_id)
        if timeout_seconds is not None and (isinstance(timeout_seconds, bool)
                                            or not math.isfinite(timeout_seconds)
                                            or timeout_seconds < 0):
            raise InvalidArgument("timeout_seconds is a number of seconds, or None for none",
                                  field="timeout_seconds")
        runner = self.routes.runner(kernel)
        self.daemon.spawn(run_batch_job(runner, session_id, code, timeout_seconds,
                                       self.link.emitter.emit),
                         name=f"batch-{kernel_id}")

    async def execute_code(self, kernel_id: str, code: str, opts: dict[str, Any] | None = None,
                           agent_id: str | None = None) -> dict[str, Any]:
        """The seed's execute: query mode unless ``opts["mode"]`` says otherwise; waits for the
        result unless ``opts["flush_timeout"]`` is given; follow with ``continue`` via execute."""
        kernel = self._kernel(kernel_id, agent_id)
        opts = dict(opts or {})
        mode = str(opts.pop("mode", "query"))
        run_id = opts.pop("run_id", None)
        flush_timeout = opts.pop("flush_timeout", None)
        return await self.execute(kernel.session_id, kernel_id, 2, run_id, mode, code, opts,
                                  flush_timeout)

    async def get_completions(self, kernel_id: str, text: str, opts: dict[str, Any] | None = None,
                              agent_id: str | None = None) -> dict[str, Any]:
        kernel = self._kernel(kernel_id, agent_id)
        return {"result": await self.routes.runner(kernel).complete(text, opts or {})}

    async def interrupt_kernel(self, kernel_id: str, agent_id: str | None = None
                               ) -> dict[str, str]:
        kernel = self._kernel(kernel_id, agent_id)
        await self.routes.runner(kernel).interrupt()
        return {"status": "finished"}

    async def start_service(self, kernel_id: str, service: str,
                            opts: dict[str, Any] | None = None,
                            agent_id: str | None = None) -> dict[str, Any]:
        kernel = self._kernel(kernel_id, agent_id)
        opts = _service_opts(opts)
        decl = next((s for s in kernel.service_ports if s.name == service), None)
        if decl is None:
            return {"status": "failed", "error": f"no service named {service!r}"}
        return dict(await self.routes.runner(kernel).start_service(
            service, opts, list(decl.container_ports), protocol_name=decl.protocol))

    async def shutdown_service(self, kernel_id: str, service: str,
                               agent_id: str | None = None) -> None:
        kernel = self._kernel(kernel_id, agent_id)
        await self.routes.runner(kernel).shutdown_service(service)

    # ---------------------------------------------------------------- files
    async def upload_file(self, kernel_id: str, filename: str, filedata: bytes,
                          agent_id: str | None = None) -> None:
        kernel = self._kernel(kernel_id, agent_id)
        await self._files(kernel).upload(filename, filedata)

    async def download_file(self, kernel_id: str, filepath: str,
                            agent_id: str | None = None) -> bytes:
        kernel = self._kernel(kernel_id, agent_id)
        return await self._files(kernel).download_tar(filepath)

    async def download_single(self, kernel_id: str, filepath: str,
                              agent_id: str | None = None) -> bytes:
        kernel = self._kernel(kernel_id, agent_id)
        return await self._files(kernel).download_single(filepath)

    async def list_files(self, kernel_id: str, path: str = "/home/work",
                         agent_id: str | None = None) -> dict[str, Any]:
        kernel = self._kernel(kernel_id, agent_id)
        entries = await self._files(kernel).list_files(path)
        return list_files_reply(path, list(entries))


def _opts_map(opts: Any) -> dict[str, Any]:
    """A call's ``opts``: a map, ``{}`` when absent."""
    if opts is None:
        return {}
    if not isinstance(opts, dict):
        raise InvalidArgument("opts is a map", field="opts")
    return opts


def _service_opts(opts: Any) -> dict[str, Any]:
    """``start_service``'s ``opts``: a map whose ``arguments`` and ``envs``, when given, are
    maps too (the runner checks each name against the service's allow-lists)."""
    checked = _opts_map(opts)
    for key in ("arguments", "envs"):
        if checked.get(key) is not None and not isinstance(checked[key], dict):
            raise InvalidArgument(f"opts.{key} is a map of names to values", field=f"opts.{key}")
    return checked


_BATCH_STEPS = ("clean", "build", "exec")  # a batch run's shell commands, in its opts


def _execute_opts(mode: str, opts: Any) -> dict[str, Any]:
    """``execute``'s ``opts``: a map; a batch run's steps are commands (text), or absent."""
    checked = _opts_map(opts)
    if mode != "batch":
        return checked
    for step in _BATCH_STEPS:
        if checked.get(step) is not None and not isinstance(checked[step], str):
            raise InvalidArgument(f"opts.{step} is a shell command (text)", field=f"opts.{step}")
    return {k: v for k, v in checked.items() if not (k in _BATCH_STEPS and v is None)}
