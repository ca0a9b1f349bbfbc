"""The warm pool: per image, pre-started containers whose runner waits for a claim, kept full
by the pool's own background task, claimed by creates it can serve exactly.

A member is made like a kernel of the pool's shape (same builder, same mounts and ports) with
the pool's labels instead of a kernel's identity, its scratch under ``{scratch-root}/.warm-pool``
with a ledger of its own kind (state ``WARM``). A claim (:meth:`WarmPool.serve`, on the
create's path) takes an idle member, drops its pool ledger, makes its scratch the kernel's
(:meth:`ScratchManager.take_over`), gives the kernel the member's host ports, checks that the
kernel's own create config equals the member's up to what a claim changes
(:func:`warmplan.config_miss`), writes the kernel's files and ledger (naming the container),
applies the kernel's limits live, renames the container and hands the runner its environment.
A claim failing half-way removes the member and everything of it, and the create goes on cold.

After a restart, :meth:`WarmPool.adopt_or_reap` takes unclaimed members back (still configured,
running, their ledger intact) and removes the rest; a member a kernel's ledger names is that
kernel's (the reconciler's business).
"""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from collections.abc import Awaitable, Callable, Collection, Mapping, Sequence
from contextlib import suppress
from dataclasses import dataclass, field, replace
from decimal import Decimal
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from berth.errors import BerthError
from berth.kernel.container_config import container_name, has_runner, kernel_environ
from berth.kernel.ledger import LEDGER_FILENAME, Ledger, LedgerEntry
from berth.kernel.registry import Kernel
from berth.kernel.service_ports import (
    ServicePort,
    assign_host_ports,
    declared_service_ports,
    host_port_map,
    service_ports_from_wire,
    service_ports_to_wire,
    without_host_ports,
)
from berth.kernel.spec import KernelSpec, parse_kernel_spec
from berth.kernel.warmplan import (
    WARM_ID_LABEL,
    WARM_POOL_LABEL,
    WARM_RUNNER_FLAG,
    MissReason,
    PoolContainer,
    config_miss,
    is_pool_container,
    live_update,
    plan_adoption,
    plan_refill,
    spec_miss,
)
from berth.resources import LimitContributor, merge_docker_args
from berth.storage import ScratchManager, nofollow
from berth.tasks import TaskSupervisor
from berth.types import KERNEL_ID_LABEL, OWNER_LABEL, SESSION_ID_LABEL, KernelId

if TYPE_CHECKING:
    from berth.kernel.lifecycle import KernelLifecycle

__all__ = ["POOL_DIR", "WarmPool", "WarmPoolSettings"]

log = logging.getLogger(__name__)
POOL_DIR = ".warm-pool"  # under the scratch root; no kernel id can be this name
WARM_STATE = "WARM"
CPU_PERIOD_US = 100_000


@dataclass(frozen=True)
class WarmPoolSettings:
    images: Mapping[str, int]  # image ref → idle containers to keep
    max_total: int
    cpu: Decimal
    mem: int
    refill_interval: float = 5.0
    start_timeout: float = 60.0

    @property
    def enabled(self) -> bool:
        """Off: nothing is kept, every create goes cold uncounted, and what an earlier
        configuration left is reaped at start."""
        return any(self.images.values()) and self.max_total > 0


class WarmRunner(Protocol):
    async def status(self) -> dict[str, Any]: ...

    async def claim(self, environ: Mapping[str, str], unset: Sequence[str] = ()
                    ) -> dict[str, Any]: ...

    async def close(self) -> None: ...


@dataclass
class Member:
    member_id: str
    image: str
    container_id: str
    image_id: str
    config: dict[str, Any]  # what it was created with
    service_ports: tuple[ServicePort, ...]  # declarations with the host ports it holds
    tls_ports: dict[int, int] = field(default_factory=dict)
    pid: int = 0

    @property
    def host_ports(self) -> list[int]:
        return [*(p for d in self.service_ports for p in d.host_ports),
                *self.tls_ports.values()]

    def entry(self, agent_id: str, spec: Mapping[str, Any], uid: int, gid: int) -> LedgerEntry:
        return LedgerEntry(
            kernel_id=KernelId(self.member_id), session_id=self.member_id, agent_id=agent_id,
            spec=dict(spec), allocation={}, host_ports=host_port_map(self.service_ports),
            uid=uid, gid=gid, state=WARM_STATE, container_id=self.container_id or None,
            image_id=self.image_id,
            extra={"image": self.image, "config": self.config,
                   "service_ports": service_ports_to_wire(self.service_ports),
                   "tls_ports": {str(c): h for c, h in self.tls_ports.items()}})

    @classmethod
    def from_entry(cls, entry: LedgerEntry, pid: int) -> Member:
        return cls(member_id=entry.kernel_id, image=str(entry.extra["image"]),
                   container_id=entry.container_id or "", image_id=entry.image_id or "",
                   config=dict(entry.extra["config"]),
                   service_ports=service_ports_from_wire(entry.extra.get("service_ports", [])),
                   tls_ports={int(c): int(h) for c, h in entry.extra.get("tls_ports", {}).items()},
                   pid=pid)


class _Mismatch(BerthError):
    def __init__(self, reason: MissReason, key: str) -> None:
        super().__init__(f"the pool container differs from the kernel at {key}")
        self.reason = reason


class WarmPool:
    def __init__(self, settings: WarmPoolSettings, lifecycle: KernelLifecycle, *,
                 pool_scratch: ScratchManager, kernel_scratch: ScratchManager,
                 runner_factory: Callable[[Path], WarmRunner],
                 limits: Sequence[LimitContributor] = (),
                 on_event: Callable[[str, str, float], None] = lambda e, v, s: None,
                 on_size: Callable[[str, int], None] = lambda image, n: None) -> None:
        self.s = settings
        self.lc = lifecycle
        self.pool_scratch = pool_scratch
        self.kernel_scratch = kernel_scratch
        self.ledger = Ledger(pool_scratch.root)
        self.runner_factory = runner_factory
        self.limits = tuple(limits)  # a pool container's, on the pool's scratch
        self.on_event = on_event
        self.on_size = on_size
        self.idle: dict[str, list[Member]] = {image: [] for image in settings.images}
        self._starting: dict[str, str] = {}  # member id → image, while it starts
        self._claiming: set[str] = set()  # container ids being made kernels
        self._wake = asyncio.Event()
        self._tasks = TaskSupervisor("warm-pool")
        # Called at each step of a claim; tests make it raise to cut a claim half-way.
        self.on_claim_step: Callable[[str], Awaitable[None] | None] = lambda step: None

    # ---------------------------------------------------------------- claim
    async def serve(self, kernel: Kernel) -> bool:
        if not self.s.enabled:
            return False
        spec = kernel.spec
        image = spec.image.ref
        if not self.s.images.get(image):
            return self._miss(MissReason.NOT_POOLED)
        reason = spec_miss(spec, default_uid=self.lc.s.default_uid,
                           default_gid=self.lc.s.default_gid)
        if reason is not None:
            return self._miss(reason)
        if not has_runner(kernel.image_labels):
            return self._miss(MissReason.NO_RUNNER)
        members = self.idle.get(image) or []
        if not members:
            self._wake.set()
            return self._miss(MissReason.EMPTY)
        member = members.pop(0)
        self._sizes()
        self._wake.set()  # refill in the background, never on this path
        if member.image_id != kernel.image_id:
            self._tasks.spawn(self._reap(member), name=f"warm-reap-{member.member_id}")
            return self._miss(MissReason.IMAGE_CHANGED)
        self._claiming.add(member.container_id)
        try:
            await self._claim(kernel, member)
        except BaseException as exc:
            reason = exc.reason if isinstance(exc, _Mismatch) else MissReason.CLAIM_FAILED
            log.warning("kernel %s: claiming pool container %s failed (%s: %s); it is removed "
                        "and the kernel starts cold", kernel.kernel_id, member.container_id[:12],
                        reason, exc)
            await asyncio.shield(self._undo(kernel, member))
            if not isinstance(exc, Exception):
                raise
            return self._miss(reason)
        finally:
            self._claiming.discard(member.container_id)
        log.info("kernel %s: claimed pool container %s (%s)", kernel.kernel_id,
                 member.container_id[:12], image)
        self.on_event("hit", image, 0.0)
        return True

    async def _claim(self, kernel: Kernel, member: Member) -> None:
        lc, kid = self.lc, kernel.kernel_id
        await self._step("taken")
        if [d.shape for d in kernel.service_ports] != [d.shape for d in member.service_ports]:
            raise _Mismatch(MissReason.PORTS, "service ports")
        pool_dir = self.pool_scratch.paths(member.member_id).kernel_dir
        # From here the member is no pool container any more: a crash leaves it to be reaped.
        nofollow.unlink_at(self.pool_scratch.root, (member.member_id, "config", LEDGER_FILENAME))
        layout = await self.kernel_scratch.take_over(self.pool_scratch, member.member_id, kid)
        lc.layouts[kid] = layout
        await self._step("scratch-moved")
        kernel.service_ports = assign_host_ports(kernel.service_ports, member.host_ports)
        kernel.host_ports.update(host_port_map(kernel.service_ports))
        kernel.tls_ports = dict(member.tls_ports)
        plan = lc._plan(kernel, layout)
        config = lc._container_config(kernel, plan)
        if mismatch := config_miss(member.config, config, pool_dir=str(pool_dir),
                                   kernel_dir=str(layout.kernel_dir)):
            raise _Mismatch(*mismatch)
        environ = kernel_environ(plan)
        lc._write_kernel_files(kernel, layout, environ)
        kernel.container_id, kernel.pid = member.container_id, member.pid
        await lc._write_ledger(kernel)  # the kernel's container from here, by id
        await self._step("ledger-written")
        await asyncio.gather(lc.backend.update(member.container_id, live_update(config)),
                             lc.backend.rename(member.container_id, container_name(kid)))
        await self._step("updated")
        await lc._watch_ooms(kernel)
        runner = self.runner_factory(layout.runner_socket)
        lc.runners[kid] = runner  # type: ignore[assignment]  # a RunnerClient either way
        was = {line.split("=", 1)[0] for line in member.config.get("Env") or []}
        reply = await runner.claim(environ, sorted(was - set(environ)))
        if not reply.get("ready"):
            raise _Mismatch(MissReason.CLAIM_FAILED, "runner not ready after its claim")
        await self._step("claimed")
        lc._seal(kernel)
        await lc._open_tls_routes(kernel)

    async def _undo(self, kernel: Kernel, member: Member) -> None:
        """Everything of a claim that failed goes: the container, its scratch under either
        name, its ports; the kernel is left as before the claim (its allocation kept)."""
        lc, kid = self.lc, kernel.kernel_id
        await _quietly(lc.backend.remove(member.container_id))
        runner = lc.runners.pop(kid, None)
        if runner is not None:
            await _quietly(runner.close())
        await lc._close_tls_routes(kernel)
        if kernel.container_id == member.container_id:
            kernel.container_id, kernel.pid = None, 0
        lc.layouts.pop(kid, None)
        await _quietly(self.kernel_scratch.remove(kid))
        await _quietly(self.pool_scratch.remove(member.member_id))
        for port in member.host_ports:
            lc.ports.release(port)
        kernel.host_ports, kernel.tls_ports = {}, {}
        kernel.service_ports = without_host_ports(kernel.service_ports)

    async def _step(self, name: str) -> None:
        result = self.on_claim_step(name)
        if result is not None:
            await result

    def _miss(self, reason: MissReason) -> bool:
        log.info("warm pool: cold start (%s)", reason)
        self.on_event("miss", str(reason), 0.0)
        return False

    # ---------------------------------------------------------------- refill
    def start(self) -> None:
        """Start keeping the pool full (the pool's own task; :meth:`close` ends it); nothing
        while the pool is off."""
        if self.s.enabled:
            self._tasks.spawn(self.run(), name="warm-pool-refill")

    async def run(self) -> None:
        """Keep the pool full: on each wake-up (a claim) and every refill interval."""
        while True:
            self._wake.clear()
            try:
                await self._tick()
            except BerthError as exc:
                log.warning("warm pool: refill pass failed: %s", exc)
            with suppress(TimeoutError):
                async with asyncio.timeout(self.s.refill_interval):
                    await self._wake.wait()

    async def _tick(self) -> None:
        await self._drop_dead()
        have: dict[str, int] = {image: len(ms) for image, ms in self.idle.items()}
        for image in self._starting.values():
            have[image] = have.get(image, 0) + 1
        for image, count in plan_refill(self.s.images, self.s.max_total, have).items():
            for _ in range(count):
                if not await self._start_member(image):
                    break  # this image fails now: the next pass tries again

    async def _drop_dead(self) -> None:
        """Members whose container ended, and pool containers nobody holds, are removed."""
        listed = await self.lc.backend.list({OWNER_LABEL: self.lc.s.agent_id})
        running = {c.id for c in listed if c.running}
        for image, members in self.idle.items():
            for member in [m for m in members if m.container_id not in running]:
                members.remove(member)
                log.warning("warm pool: container %s (%s) ended; removed",
                            member.container_id[:12], image)
                await self._reap(member)
        held = {m.container_id for ms in self.idle.values() for m in ms} | self._claiming
        kernels = {k.container_id for k in self.lc.registry.live() if k.container_id}
        for c in listed:
            if (is_pool_container(c.labels) and c.id not in held and c.id not in kernels
                    and c.labels.get(WARM_ID_LABEL) not in self._starting):
                log.warning("warm pool: removing pool container %s nobody holds", c.id[:12])
                await _quietly(self.lc.backend.remove(c.id))
        self._sizes()

    async def _start_member(self, image: str) -> bool:
        started = time.monotonic()
        member_id = f"w{uuid.uuid4().hex[:15]}"
        self._starting[member_id] = image
        try:
            member = await self._make_member(member_id, image)
        except (BerthError, OSError, TimeoutError) as exc:
            log.warning("warm pool: starting a container of %s failed: %s", image, exc)
            return False
        finally:
            self._starting.pop(member_id, None)
        self.idle.setdefault(image, []).append(member)
        self.on_event("refill", image, time.monotonic() - started)
        self._sizes()
        log.info("warm pool: container %s of %s ready (%.0f ms)", member.container_id[:12],
                 image, (time.monotonic() - started) * 1000)
        return True

    async def _make_member(self, member_id: str, image: str) -> Member:
        lc = self.lc
        info = await lc.backend.image_inspect(image)
        if info is None:
            raise BerthError(f"image {image} is not on this node")
        spec = parse_kernel_spec(
            {"image": {"canonical": image, "is_local": True},
             "resource_slots": {"cpu": str(self.s.cpu), "mem": str(self.s.mem)}},
            kernel_id=KernelId(member_id), session_id=member_id)
        kernel = Kernel(kernel_id=KernelId(member_id), session_id=member_id, spec=spec,
                        uid=lc.s.default_uid, gid=lc.s.default_gid)
        kernel.image_id, kernel.image_labels = info.id, dict(info.labels)
        if not has_runner(kernel.image_labels):
            raise BerthError(f"image {image} has no runner: the pool cannot hold it")
        kernel.service_ports = declared_service_ports(kernel.kernel_id, spec, kernel.image_labels)
        member = Member(member_id, image, "", info.id, {}, kernel.service_ports)
        try:
            await self._materialise(kernel, member, spec)
        except BaseException:
            await asyncio.shield(self._reap(member))
            raise
        return member

    async def _materialise(self, kernel: Kernel, member: Member, spec: KernelSpec) -> None:
        lc = self.lc
        needed = sum(len(d.container_ports) for d in kernel.service_ports)
        tls = lc._tls_container_ports(kernel)
        ports = lc.ports.acquire_many(needed + len(tls))
        kernel.service_ports = member.service_ports = assign_host_ports(kernel.service_ports,
                                                                        ports[:needed])
        kernel.tls_ports = member.tls_ports = dict(zip(tls, ports[needed:], strict=True))
        layout = await self.pool_scratch.create(member.member_id, kernel.uid, kernel.gid)
        plan = replace(lc._plan(kernel, layout), resource_args=self._shape_args(member.member_id, spec))
        config = lc._container_config(kernel, plan)
        config["Cmd"] = [*config["Cmd"], WARM_RUNNER_FLAG]
        labels = {k: v for k, v in config["Labels"].items()
                  if k not in (KERNEL_ID_LABEL, SESSION_ID_LABEL, "ai.backend.owner-user-id",
                               "ai.backend.owner-project-id")}
        config["Labels"] = {**labels, WARM_POOL_LABEL: member.image,
                            WARM_ID_LABEL: member.member_id}
        member.config = config
        record = spec.model_dump(mode="json")
        await lc.write_durably(self.ledger, member.entry(lc.s.agent_id, record, kernel.uid,
                                                         kernel.gid))
        member.container_id = await lc.backend.create(f"berth-warm.{member.member_id}", config)
        await lc.write_durably(self.ledger, member.entry(lc.s.agent_id, record, kernel.uid,
                                                         kernel.gid))
        await lc.backend.start(member.container_id)
        member.pid = (await lc.backend.inspect(member.container_id)).pid
        await self._until_waiting(member, layout.runner_socket)
        self.pool_scratch.seal(member.member_id)

    def _shape_args(self, member_id: str, spec: KernelSpec) -> dict[str, Any]:
        host = {"CpuPeriod": CPU_PERIOD_US, "CpuQuota": int(self.s.cpu * CPU_PERIOD_US),
                "Memory": self.s.mem, "MemorySwap": self.s.mem}
        return merge_docker_args({"HostConfig": host, "Env": {}}, *(
            c.docker_args(member_id, spec.resource_opts) for c in self.limits))

    async def _until_waiting(self, member: Member, socket: Path) -> None:
        """The runner answers on its socket: it is up and waits for its claim."""
        runner = self.runner_factory(socket)
        deadline = time.monotonic() + self.s.start_timeout
        try:
            while True:
                try:
                    await runner.status()
                    return
                except (BerthError, OSError):
                    if time.monotonic() > deadline:
                        raise
                    info = await self.lc.backend.inspect(member.container_id)
                    if not info.running:
                        raise BerthError(f"pool container exited with {info.exit_code}") \
                            from None
                await asyncio.sleep(0.05)
        finally:
            await runner.close()

    async def _reap(self, member: Member) -> None:
        if member.container_id:
            await _quietly(self.lc.backend.remove(member.container_id))
        await _quietly(self.pool_scratch.remove(member.member_id))
        for port in member.host_ports:
            self.lc.ports.release(port)
        self._sizes()

    def _sizes(self) -> None:
        for image, members in self.idle.items():
            self.on_size(image, len(members))

    # ---------------------------------------------------------------- restart
    async def adopt_or_reap(self, claimed: Collection[str]) -> tuple[int, int]:
        """At start, after the kernels' reconcile: (adopted, reaped)."""
        listed = await self.lc.backend.list({OWNER_LABEL: self.lc.s.agent_id})
        found = [c for c in listed if is_pool_container(c.labels)]
        scratch_ids = set(self.pool_scratch.scan())
        entries = {mid: self.ledger.read(mid) for mid in scratch_ids}
        candidates = []
        for c in found:
            entry = entries.get(KernelId(c.labels.get(WARM_ID_LABEL, "")))
            ok = entry is not None and entry.state == WARM_STATE and entry.container_id == c.id
            candidates.append(PoolContainer(c.id, c.labels.get(WARM_ID_LABEL, ""),
                                            c.labels[WARM_POOL_LABEL], c.running, ok))
        plan = plan_adoption(candidates, claimed, self.s.images, self.s.max_total, scratch_ids)
        by_id = {c.id: c for c in found}
        for cid in plan.adopt:
            entry = entries[KernelId(by_id[cid].labels[WARM_ID_LABEL])]
            assert entry is not None
            member = Member.from_entry(entry, by_id[cid].pid)
            for port in member.host_ports:
                self.lc.ports.discard(port)
            self.idle.setdefault(member.image, []).append(member)
        for cid in plan.reap:
            await _quietly(self.lc.backend.remove(cid))
        for mid in plan.reap_scratch:
            await _quietly(self.pool_scratch.remove(mid))
        self._sizes()
        log.info("warm pool: %d containers adopted, %d reaped at start", len(plan.adopt),
                 len(plan.reap))
        return len(plan.adopt), len(plan.reap)

    async def close(self) -> None:
        """Stop refilling; idle members keep running (the next start adopts them)."""
        await self._tasks.close()

    async def drain(self) -> None:
        """Remove every idle member (the pool switched off, tests)."""
        for members in self.idle.values():
            while members:
                await self._reap(members.pop())


async def _quietly(work: Awaitable[Any]) -> None:
    try:
        await work
    except Exception as exc:  # noqa: BLE001 - cleanup goes on; the next pass retries
        log.warning("warm pool: cleanup step failed: %r", exc)
