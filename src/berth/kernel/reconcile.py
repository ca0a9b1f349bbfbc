"""Reconciliation of ledger, containers and scratch directories.

:func:`plan_reconcile` is pure: given what is on disk and what the engine reports, it decides,
for every kernel id and container, one action. :class:`Reconciler` carries the actions out and
logs each correction. The same code runs at start (crash recovery) and periodically (sync), the
periodic pass judging only kernels whose state predates its container listing.
"""

from __future__ import annotations

import contextlib
import logging
import time
import uuid
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from berth import logctx
from berth.backend import ContainerBackend, ContainerInfo
from berth.errors import BerthError, ContainerNotFound, InvalidArgument, StorageError
from berth.kernel.deps import ScratchLayout
from berth.kernel.ledger import Ledger, LedgerEntry
from berth.kernel.state import classify_exit
from berth.kernel.warmplan import is_pool_container
from berth.types import KERNEL_ID_LABEL, OWNER_LABEL, KernelId, KernelState, TerminationReason

if TYPE_CHECKING:
    from berth.events import BackgroundTaskManager, ErrorReporter, ProgressReporter, TaskFn
    from berth.kernel.lifecycle import KernelLifecycle

__all__ = [
    "Action",
    "Adopt",
    "CleanDead",
    "ReconcileReport",
    "Reconciler",
    "RemoveStrayContainer",
    "RemoveStrayScratch",
    "plan_reconcile",
]

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Adopt:
    entry: LedgerEntry
    container: ContainerInfo


@dataclass(frozen=True)
class CleanDead:
    kernel_id: KernelId
    entry: LedgerEntry
    containers: tuple[ContainerInfo, ...]
    reason: TerminationReason
    exit_code: int


@dataclass(frozen=True)
class RemoveStrayContainer:
    container: ContainerInfo


@dataclass(frozen=True)
class RemoveStrayScratch:
    kernel_id: KernelId


Action = Adopt | CleanDead | RemoveStrayContainer | RemoveStrayScratch


def _kernel_of(action: Action) -> KernelId | None:
    """The kernel an action is about (its log lines carry it)."""
    match action:
        case Adopt(entry, _):
            return entry.kernel_id
        case CleanDead() | RemoveStrayScratch():
            return action.kernel_id
        case RemoveStrayContainer(container):
            label = container.labels.get(KERNEL_ID_LABEL)
            return KernelId(label) if label else None
    return None


def plan_reconcile(entries: Mapping[KernelId, LedgerEntry | None],
                   containers: Sequence[ContainerInfo]) -> list[Action]:
    by_kernel: dict[KernelId, list[ContainerInfo]] = {}
    actions: list[Action] = []
    # A warm-pool container a kernel claimed carries the pool's labels: its ledger names it.
    claimed = {e.container_id: kid for kid, e in entries.items() if e and e.container_id}
    for c in containers:
        kid = claimed.get(c.id) or KernelId(c.labels.get(KERNEL_ID_LABEL, ""))
        if kid in entries and entries[kid] is not None:
            by_kernel.setdefault(kid, []).append(c)
        elif not is_pool_container(c.labels):  # pool containers are the pool's own
            actions.append(RemoveStrayContainer(c))
    for kid, entry in sorted(entries.items()):
        if entry is None:
            actions.append(RemoveStrayScratch(kid))
            continue
        mine = by_kernel.get(kid, [])
        actions.extend(_judge(kid, entry, mine))
    return actions


def _judge(kid: KernelId, entry: LedgerEntry, mine: list[ContainerInfo]) -> list[Action]:
    current = [c for c in mine if c.id == entry.container_id]
    others = tuple(c for c in mine if c.id != entry.container_id)
    strays: list[Action] = [RemoveStrayContainer(c) for c in others]
    if entry.state != KernelState.RUNNING:
        return [CleanDead(kid, entry, tuple(mine), TerminationReason.FAILED_TO_CREATE, -1)]
    if not current:
        return strays + [CleanDead(kid, entry, (), TerminationReason.CONTAINER_NOT_FOUND, -1)]
    container = current[0]
    if container.running:
        return strays + [Adopt(entry, container)]
    # Docker's OOM flag stays set after an OOM the kernel survived (recorded in its ledger):
    # then the flag cannot tell whether the end was an OOM kill too, and is not believed.
    survived = int(entry.extra.get("oom_kills_survived", 0) or 0)
    reason = classify_exit(container.exit_code, container.oom_killed, 0 if survived else None)
    code = container.exit_code if container.exit_code is not None else -1
    return strays + [CleanDead(kid, entry, (container,), reason, code)]


@dataclass
class ReconcileReport:
    adopted: list[str] = field(default_factory=list)
    cleaned: list[str] = field(default_factory=list)
    stray_containers: list[str] = field(default_factory=list)
    stray_scratch: list[str] = field(default_factory=list)
    seconds: float = 0.0
    deferred: int = 0  # corrections left to the background task cleanup_task
    cleanup_task: str | None = None


class Reconciler:
    def __init__(self, lifecycle: KernelLifecycle, agent_id: str, *,
                 errors: ErrorReporter | None = None, tasks: BackgroundTaskManager | None = None,
                 on_reaped: Callable[[str, int], None] | None = None) -> None:
        self.lc = lifecycle
        self.agent_id = agent_id
        # For the leak gauges: the owned containers at the last listing (less what the pass
        # removed), and a callback told what each pass reaped ("kernel", "container", "scratch").
        self.containers_owned: int | None = None
        self.on_reaped: Callable[[str, int], None] = on_reaped or (lambda kind, count: None)
        # Told each correction that failed (agent_error); the pass goes on with the others.
        self.errors = errors
        # With a task manager, more than bulk_threshold corrections of dead things at start
        # run as a background task (bgtask_* progress) after the node is ready.
        self.tasks = tasks
        self.bulk_threshold = 8

    @property
    def backend(self) -> ContainerBackend:
        return self.lc.backend

    @property
    def ledger(self) -> Ledger:
        return self.lc.ledger

    async def at_start(self) -> ReconcileReport:
        started = time.monotonic()
        report = ReconcileReport()
        containers = await self.backend.list({OWNER_LABEL: self.agent_id})
        entries: dict[KernelId, LedgerEntry | None] = {}
        layouts: dict[KernelId, ScratchLayout] = {}
        for kid in sorted(self.lc.scratch.scan()):
            try:
                layouts[kid] = await self.lc.scratch.open(kid)
            except StorageError as exc:
                log.warning("reconcile: scratch of %s is unusable: %s", kid, exc)
                entries[kid] = None
                continue
            entries[kid] = self.ledger.read(kid)
        now, later = self._split(plan_reconcile(entries, containers))
        async with self.lc.registry.lock:
            for action in now:
                await self._guarded(action, layouts, report)
        report.seconds = time.monotonic() - started
        if later and self.tasks is not None:
            report.deferred = len(later)
            report.cleanup_task = self.tasks.start(
                self._cleanup_job(later, layouts, report, containers), name="reconcile cleanup")
            log.info("reconcile: %d adopted (%.0f ms); %d corrections of dead things go to "
                     "background task %s", len(report.adopted), report.seconds * 1000,
                     len(later), report.cleanup_task)
            return report
        self._tally(report, containers)
        log.info("reconcile: %d adopted, %d cleaned, %d stray containers, %d stray scratch dirs "
                 "(%.0f ms)", len(report.adopted), len(report.cleaned),
                 len(report.stray_containers), len(report.stray_scratch), report.seconds * 1000)
        return report

    def _split(self, actions: list[Action]) -> tuple[list[Action], list[Action]]:
        """Adoptions and anything touching a running container now (they hold ports and
        slots); the rest — dead kernels, stopped strays, stray scratch — later, in a
        background task, when there are more than ``bulk_threshold`` of them."""
        def deferrable(action: Action) -> bool:
            match action:
                case CleanDead(_, _, mine, _, _):
                    return not any(c.running for c in mine)
                case RemoveStrayContainer(container):
                    return not container.running
                case RemoveStrayScratch():
                    return True
            return False
        later = [a for a in actions if deferrable(a)]
        if self.tasks is None or len(later) <= self.bulk_threshold:
            return actions, []
        return [a for a in actions if not deferrable(a)], later

    async def _guarded(self, action: Action, layouts: Mapping[KernelId, ScratchLayout],
                       report: ReconcileReport) -> None:
        with logctx.bound(kernel_id=_kernel_of(action)):
            try:
                await self._apply(action, layouts, report)
            except BerthError as exc:  # one kernel's failure must not keep the node down
                self._failed(action, exc)

    def _cleanup_job(self, actions: list[Action], layouts: Mapping[KernelId, ScratchLayout],
                     report: ReconcileReport, containers: Sequence[ContainerInfo]) -> TaskFn:
        async def job(reporter: ProgressReporter) -> str:
            reporter.set(0, len(actions), "reconcile cleanup started")
            for done, action in enumerate(actions, 1):
                await self._guarded(action, layouts, report)
                reporter.set(done, len(actions))
            self._tally(report, containers)
            message = (f"reconcile cleanup: {len(report.cleaned)} dead kernels, "
                       f"{len(report.stray_containers)} stray containers, "
                       f"{len(report.stray_scratch)} stray scratch dirs")
            log.info("%s", message)
            return message
        return job

    def _tally(self, report: ReconcileReport, containers: Sequence[ContainerInfo]) -> None:
        self.containers_owned = len(containers) - len(report.stray_containers) - sum(
            1 for kid in report.cleaned for c in containers
            if c.labels.get(KERNEL_ID_LABEL) == kid)
        self.on_reaped("kernel", len(report.cleaned))
        self.on_reaped("container", len(report.stray_containers))
        self.on_reaped("scratch", len(report.stray_scratch))

    async def _apply(self, action: Action, layouts: Mapping[KernelId, ScratchLayout],
                     report: ReconcileReport) -> None:
        match action:
            case Adopt(entry, container):
                layout = layouts[entry.kernel_id]
                await self.lc.adopt(entry, layout, container.pid)
                report.adopted.append(entry.kernel_id)
                log.info("reconcile: adopted kernel %s (container %s)", entry.kernel_id,
                         container.id[:12])
            case CleanDead(kid, entry, containers, reason, code):
                for c in containers:
                    await self._remove(c.id)
                await self.lc.scratch.remove(kid)
                report.cleaned.append(kid)
                log.warning("reconcile: kernel %s was dead (%s, exit %s); cleaned", kid, reason,
                            code)
                self.lc.events.emit("kernel_terminated", {
                    "kernel_id": kid, "session_id": entry.session_id, "reason": str(reason),
                    "exit_code": code}, broadcast=True)
            case RemoveStrayContainer(container):
                await self._remove(container.id)
                report.stray_containers.append(container.id)
                log.warning("reconcile: removed container %s that no ledger owns",
                            container.id[:12])
            case RemoveStrayScratch(kid):
                await self.lc.scratch.remove(kid)
                report.stray_scratch.append(kid)
                log.warning("reconcile: removed scratch of %s that no ledger owns", kid)

    def _failed(self, action: Action, exc: BaseException) -> None:
        what = type(action).__name__
        kid = _kernel_of(action) or ""
        log.error("reconcile: %s of %s failed: %s", what, kid or action, exc)
        if self.errors is not None:
            self.errors.report(f"reconcile at start: {what} of kernel {kid} failed: {exc}",
                               source="reconcile", exc=exc, action=what, kernel_id=kid)

    async def _remove(self, container_id: str) -> None:
        with contextlib.suppress(ContainerNotFound):
            await self.backend.remove(container_id)

    async def align_with_manager(self, kernel_session_ids: Sequence[Sequence[str]]) -> None:
        """Align with the Manager's view (``(kernel_id, session_id)`` pairs): kernels it names
        that this node does not run are reported already-terminated; kernels this node runs
        that it does not name are ended."""
        registry = self.lc.registry
        wanted = manager_kernels(kernel_session_ids)
        for kernel_id, session_id in wanted.items():
            if registry.find(kernel_id) is None:
                self.lc.events.emit("kernel_terminated", {
                    "kernel_id": kernel_id, "session_id": session_id,
                    "reason": str(TerminationReason.ALREADY_TERMINATED), "exit_code": -1,
                }, broadcast=True)
        for kernel in list(registry.live()):
            if kernel.kernel_id not in wanted and kernel.state == KernelState.RUNNING:
                log.warning("kernel %s is unknown to the manager; destroying", kernel.kernel_id)
                await self.lc.destroy(kernel.kernel_id, TerminationReason.NOT_FOUND_IN_MANAGER)

    async def sync(self) -> int:
        """Periodic pass: notice containers that died unseen and containers nobody owns."""
        listed_at, listed_wall = time.monotonic(), time.time()
        containers = await self.backend.list({OWNER_LABEL: self.agent_id})
        running = {c.id for c in containers if c.running}
        async with self.lc.registry.lock:
            _, views = self.lc.registry.snapshot()
        known = {v.kernel_id for v in views}
        dead = [v.container_id for v in views
                if v.state == KernelState.RUNNING and v.state_since < listed_at
                and v.container_id and v.container_id not in running]
        for container_id in dead:
            assert container_id
            await self.lc.on_container_exit(container_id)
        # A kernel being torn down stays in the registry until its container is gone, so a
        # container whose kernel is unknown here has no owner, unless that kernel ended while
        # the engine listed (its teardown removed it; the next pass sees any leftover).
        kernels = {v.container_id for v in views if v.container_id}
        strays = [c for c in containers if c.labels.get(KERNEL_ID_LABEL) not in known
                  and c.id not in kernels and not is_pool_container(c.labels)
                  and not self._ended_since(c.labels.get(KERNEL_ID_LABEL), listed_wall)]
        for c in strays:
            log.warning("sync: removing container %s that no kernel owns", c.id[:12])
            await self._remove(c.id)
        self.containers_owned = len(containers) - len(strays)
        self.on_reaped("kernel", len(dead))
        self.on_reaped("container", len(strays))
        return len(dead) + len(strays)

    def _ended_since(self, kernel_id: str | None, since: float) -> bool:
        ended = self.lc.registry.ended(KernelId(kernel_id)) if kernel_id else None
        return (ended is not None and ended.termination is not None
                and ended.termination.at >= since)


def manager_kernels(pairs: Any) -> dict[KernelId, str]:
    """``sync_kernel_registry``'s ``(kernel_id, session_id)`` pairs → {kernel id: session id};
    anything else is refused whole, before anything is done."""
    if isinstance(pairs, str | bytes) or not isinstance(pairs, Sequence):
        raise InvalidArgument("raw_kernel_session_ids is a list of (kernel_id, session_id) pairs",
                              field="raw_kernel_session_ids")
    wanted: dict[KernelId, str] = {}
    for pair in pairs:
        if (isinstance(pair, str | bytes) or not isinstance(pair, Sequence) or len(pair) != 2
                or not all(isinstance(part, str | uuid.UUID) for part in pair)):
            raise InvalidArgument(f"not a (kernel_id, session_id) pair: {pair!r:.80}",
                                  field="raw_kernel_session_ids")
        wanted[KernelId(str(pair[0]))] = str(pair[1])  # a manager's UUIDs arrive as UUIDs
    return wanted
