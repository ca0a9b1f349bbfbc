"""Reconciliation: every branch of the pure plan, then at_start and sync over FakeBackend."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from berth.backend import ContainerInfo
from berth.kernel.ledger import LedgerEntry
from berth.kernel.reconcile import (
    Adopt,
    CleanDead,
    RemoveStrayContainer,
    RemoveStrayScratch,
    plan_reconcile,
)
from berth.kernel.warmplan import WARM_POOL_LABEL, is_pool_container
from berth.types import KERNEL_ID_LABEL, OWNER_LABEL
from berth.types import KernelState as S
from berth.types import TerminationReason as R

from .harness import AGENT_ID, IDLE_IMAGE, PY_IMAGE, Harness, build, kernel_config, new_id


def entry(kid: str, cid: str | None = "c1", state: str = "RUNNING") -> LedgerEntry:
    return LedgerEntry(kernel_id=kid, session_id="s", agent_id=AGENT_ID, spec={},
                       allocation={}, host_ports={"web": [30001]}, uid=1000, gid=1000,
                       state=state, container_id=cid)


def container(cid: str, kid: str | None, *, running: bool = True, code: int | None = None,
              oom: bool = False) -> ContainerInfo:
    labels = {OWNER_LABEL: AGENT_ID, **({KERNEL_ID_LABEL: kid} if kid else {})}
    return ContainerInfo(id=cid, name=f"n-{cid}", labels=labels, running=running,
                         status="running" if running else "exited", exit_code=code,
                         oom_killed=oom)


# ---------------------------------------------------------------------- plan_reconcile
def test_live_container_of_a_running_ledger_is_adopted() -> None:
    e, c = entry("k1"), container("c1", "k1")
    assert plan_reconcile({"k1": e}, [c]) == [Adopt(e, c)]


@pytest.mark.parametrize(("code", "oom", "reason"), [
    (0, False, R.SELF_TERMINATED), (137, True, R.OOM_KILLED), (137, False, R.SELF_TERMINATED),
    (135, False, R.SHM_EXHAUSTED), (None, False, R.SELF_TERMINATED),
])
def test_dead_container_is_cleaned_with_its_classified_reason(
        code: int | None, oom: bool, reason: R) -> None:
    e, c = entry("k1"), container("c1", "k1", running=False, code=code, oom=oom)
    assert plan_reconcile({"k1": e}, [c]) == [
        CleanDead("k1", e, (c,), reason, code if code is not None else -1)]


def test_missing_container_is_cleaned_as_not_found() -> None:
    e = entry("k1")
    assert plan_reconcile({"k1": e}, []) == [CleanDead("k1", e, (), R.CONTAINER_NOT_FOUND, -1)]


@pytest.mark.parametrize("state", ["CREATING", "PREPARING", "RESTARTING", "TERMINATING"])
def test_ledger_not_running_is_cleaned_with_all_its_containers(state: str) -> None:
    e = entry("k1", cid="c1", state=state)
    mine, other = container("c1", "k1"), container("c0", "k1")
    [action] = plan_reconcile({"k1": e}, [mine, other])
    assert isinstance(action, CleanDead)
    assert (action.kernel_id, action.reason, action.exit_code) == ("k1", R.FAILED_TO_CREATE, -1)
    assert {c.id for c in action.containers} == {"c1", "c0"}


def test_interrupted_create_without_container_id_is_cleaned() -> None:
    e = entry("k1", cid=None, state="CREATING")
    half = container("c9", "k1")  # created, but the agent died before it heard the id
    [action] = plan_reconcile({"k1": e}, [half])
    assert isinstance(action, CleanDead) and action.containers == (half,)


def test_container_without_ledger_is_stray() -> None:
    unknown, unlabelled = container("c1", "nobody"), container("c2", None)
    assert plan_reconcile({}, [unknown, unlabelled]) == [
        RemoveStrayContainer(unknown), RemoveStrayContainer(unlabelled)]


def test_scratch_without_ledger_is_stray_and_so_are_its_containers() -> None:
    c = container("c1", "k1")
    assert plan_reconcile({"k1": None}, [c]) == [RemoveStrayContainer(c), RemoveStrayScratch("k1")]


def test_second_container_of_a_kernel_is_stray_while_the_ledgers_is_adopted() -> None:
    e = entry("k1", cid="c1")
    current, extra = container("c1", "k1"), container("c2", "k1")
    assert plan_reconcile({"k1": e}, [extra, current]) == [
        RemoveStrayContainer(extra), Adopt(e, current)]


def test_second_container_is_stray_also_when_the_ledgers_is_missing() -> None:
    e = entry("k1", cid="c1")
    extra = container("c2", "k1")
    assert plan_reconcile({"k1": e}, [extra]) == [
        RemoveStrayContainer(extra), CleanDead("k1", e, (), R.CONTAINER_NOT_FOUND, -1)]


def test_plan_covers_many_kernels_independently() -> None:
    live, dead = entry("a", cid="ca"), entry("b", cid="cb")
    ca, cb = container("ca", "a"), container("cb", "b", running=False, code=1)
    actions = plan_reconcile({"a": live, "b": dead, "c": None}, [ca, cb])
    assert actions == [Adopt(live, ca), CleanDead("b", dead, (cb,), R.SELF_TERMINATED, 1),
                       RemoveStrayScratch("c")]


# ---------------------------------------------------------------------- at_start
async def restarted(old: Harness) -> Harness:
    """The agent process died (kill -9 model): a new one over the same disk and engine."""
    await old.lc.close()
    return await build(old.root, old.backend)


async def test_at_start_adopts_live_kernels_untouched(tmp_path: Path) -> None:
    old = await build(tmp_path)
    kids = [await old.create(preopen_ports=[8081]) for _ in range(2)]
    py = await old.create(image=PY_IMAGE)
    before = {k: (old.container_id(k), old.registry.get(k).host_ports,
                  old.registry.get(k).allocation) for k in (*kids, py)}
    calls = len(old.backend.calls)
    new = await restarted(old)
    report = await new.reconciler().at_start()
    try:
        assert sorted(report.adopted) == sorted((*kids, py)) and not report.cleaned
        for k, (cid, ports, allocation) in before.items():
            kernel = new.registry.get(k)
            assert (kernel.state, kernel.container_id) == (S.RUNNING, cid)
            assert kernel.host_ports == ports and kernel.allocation == allocation
            assert new.manager.get(k) is not None
            assert kernel.image_labels and (kernel.service_ports or k == py)
        held = {p for k in before for v in before[k][1].values() for p in v}
        assert new.ports.free_count == 10 - len(held)
        assert not {v for v, _ in new.backend.calls[calls:]} & {"stop", "remove", "create"}
        assert list(new.lc.runners) == [py]  # the runner kernel gets its runner back
        await new.lc.destroy(kids[0])  # an adopted kernel is a full kernel
        assert new.registry.ended(kids[0]) is not None
    finally:
        await new.lc.close()


async def test_at_start_cleans_dead_and_reaps_strays(tmp_path: Path) -> None:
    old = await build(tmp_path)
    live, gone, died, oom = [await old.create() for _ in range(4)]
    await old.backend.remove(old.container_id(gone))
    old.backend.kill(old.container_id(died), 0)
    old.backend.kill(old.container_id(oom), 137, oom=True)
    stray_cid = await old.backend.create("stray", {
        "Image": IDLE_IMAGE, "Labels": {OWNER_LABEL: AGENT_ID, KERNEL_ID_LABEL: "ghost"}})
    foreign = await old.backend.create("foreign", {
        "Image": IDLE_IMAGE, "Labels": {OWNER_LABEL: "another-agent"}})
    (old.scratch.root / "orphan" / "work").mkdir(parents=True)
    new = await restarted(old)
    report = await new.reconciler().at_start()
    try:
        assert report.adopted == [live]
        assert sorted(report.cleaned) == sorted([gone, died, oom])
        assert report.stray_containers == [stray_cid] and report.stray_scratch == ["orphan"]
        reasons = {e.payload["kernel_id"]: (e.payload["reason"], e.payload["exit_code"])
                   for e in new.sink.events if e.name == "kernel_terminated"}
        assert reasons == {gone: (R.CONTAINER_NOT_FOUND, -1), died: (R.SELF_TERMINATED, 0),
                           oom: (R.OOM_KILLED, 137)}
        for k in (gone, died, oom):
            assert not (new.scratch.root / k).exists()
            assert new.manager.get(k) is None
        assert not (new.scratch.root / "orphan").exists()
        assert set(new.backend.containers) == {new.container_id(live), foreign}
        assert new.ports.free_count == 9  # only the live kernel's port is held
    finally:
        await new.lc.close()


async def test_at_start_cleans_a_create_the_crash_interrupted(tmp_path: Path) -> None:
    old = await build(tmp_path)
    kid = new_id()
    gate = old.backend.hold("create")  # docker create is done; its reply never arrives
    task = asyncio.ensure_future(old.lc.create(kernel_config(), kid, "s"))
    await gate.reached.wait()  # the old agent is frozen here: it stands in for a dead one
    [half] = list(old.backend.containers)
    new = await build(old.root, old.backend)
    report = await new.reconciler().at_start()
    try:
        assert report.cleaned == [kid] and half not in new.backend.containers
        assert not (new.scratch.root / kid).exists()
        [event] = [e for e in new.sink.events if e.name == "kernel_terminated"]
        assert event.payload["reason"] == R.FAILED_TO_CREATE
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        await new.lc.close()
        await old.lc.close()


# ---------------------------------------------------------------------- sync
async def test_sync_notices_a_container_that_died_unseen(h: Harness) -> None:
    kid = await h.create()
    h.backend.kill(h.container_id(kid), 137, oom=True)
    assert await h.reconciler().sync() == 1
    [event] = [e for e in h.sink.of(kid) if e.name == "kernel_terminated"]
    assert event.payload["reason"] == R.OOM_KILLED
    h.assert_released(kid)


async def test_sync_removes_containers_no_kernel_owns(h: Harness) -> None:
    kid = await h.create()
    stray = await h.backend.create("stray", {
        "Image": IDLE_IMAGE, "Labels": {OWNER_LABEL: AGENT_ID, KERNEL_ID_LABEL: "ghost"}})
    assert await h.reconciler().sync() == 1
    assert stray not in h.backend.containers
    assert h.registry.get(kid).state == S.RUNNING and h.container_id(kid) in h.backend.containers


async def test_sync_leaves_a_kernel_that_is_being_created(h: Harness) -> None:
    h.runners.mode = "gate"
    kid = new_id()
    task = asyncio.ensure_future(h.lc.create(kernel_config(image=PY_IMAGE), kid, "s"))
    while not h.runners.made:
        await asyncio.sleep(0.01)
    assert await h.reconciler().sync() == 0
    assert h.container_id(kid) in h.backend.containers
    h.runners.gate.set()
    await task
    assert h.registry.get(kid).state == S.RUNNING


async def test_sync_does_not_touch_a_kernel_changed_after_the_listing(h: Harness) -> None:
    kid = await h.create()
    gate = h.backend.hold("list")
    sync = asyncio.ensure_future(h.reconciler().sync())
    await gate.reached.wait()  # the listing is taken: it shows the old container
    await h.lc.restart(kid)  # the kernel moves on while the reply is in flight
    new_cid = h.container_id(kid)
    mark = len(h.backend.calls)
    gate.release()
    assert await sync == 0
    assert [c for c in h.backend.calls[mark:] if c[1] == new_cid] == []
    assert h.registry.get(kid).state == S.RUNNING
    assert "kernel_terminated" not in h.sink.names(kid)


async def test_sync_leaves_a_container_whose_kernel_ended_while_the_engine_listed(
        h: Harness) -> None:
    kid = await h.create()
    gate = h.backend.hold("list")
    sync = asyncio.ensure_future(h.reconciler().sync())
    await gate.reached.wait()  # the listing shows the kernel's container
    await h.lc.destroy(kid)  # its teardown removes it meanwhile
    gate.release()
    assert await sync == 0  # not a stray: no warning, no reap counted


async def test_pool_containers_are_told_from_kernels_made_from_a_committed_claim() -> None:
    assert is_pool_container({WARM_POOL_LABEL: "img"})
    # a kernel from an image committed off a claimed pool container inherits the label
    assert not is_pool_container({WARM_POOL_LABEL: "img", KERNEL_ID_LABEL: "k"})
    assert not is_pool_container({WARM_POOL_LABEL: ""})  # blanked by a commit
