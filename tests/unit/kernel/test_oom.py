"""OOM bookkeeping: an OOM kill the kernel survived never makes a later plain kill `oom-killed`,
and a code worker killed by the OOM killer or by SIGBUS is told to the Manager once."""

from __future__ import annotations

import asyncio
import signal
from pathlib import Path

import pytest

import berth.kernel.lifecycle as lifecycle_module
from berth.daemon.adapters import EventAdapter
from berth.events import RecordingEmitter
from berth.kernel.oom import OomWatch
from berth.kernel.reconcile import CleanDead, plan_reconcile
from berth.types import KernelState as S
from berth.types import TerminationReason as R

from .harness import Harness, build
from .test_reconcile import container, entry


class FakeOomCounter:
    """The memory cgroup's oom_kill counter: ``now`` while the cgroup exists, else None."""

    def __init__(self) -> None:
        self.now: int | None = 0
        self.last: int | None = None

    async def oom_kills(self, container_id: str, pid: int) -> int | None:
        return self.now

    def last_oom_kills(self, container_id: str) -> int | None:
        return self.last


@pytest.fixture
async def oh(tmp_path: Path, monkeypatch: pytest.MonkeyPatch
             ) -> tuple[Harness, FakeOomCounter, list[str]]:
    monkeypatch.setattr(lifecycle_module, "OOM_SETTLE_SECONDS", 0.01)
    h = await build(tmp_path)
    counter, deaths = FakeOomCounter(), []
    h.lc.oom_counter = counter
    h.lc.on_worker_death = deaths.append
    return h, counter, deaths


def test_watch_counts_only_kills_after_its_start() -> None:
    w = OomWatch.start(3)
    assert (w.baseline, w.survived, w.reported) == (3, 3, 3)
    assert w.new_at_exit(3) == 0 and w.new_at_exit(4) == 1
    assert w.new_at_exit(None) == 0  # an earlier OOM sets Docker's flag: it proves nothing
    assert OomWatch.start(0).new_at_exit(None) is None  # nothing known: the flag decides
    assert OomWatch.start(None, survived=2).survived == 2  # from an adopted kernel's ledger


def test_watch_pending_oom_and_survival() -> None:
    w = OomWatch.start(0)
    assert w.on_oom_event() and not w.on_oom_event()  # one judgement per burst of events
    assert w.new_at_exit(None) == 1  # the container died while the OOM was pending
    assert w.survive(2) == 2 and not w.pending
    assert w.new_at_exit(2) == 0 and w.new_at_exit(None) == 0
    assert w.survive(None) == 0


def test_watch_tells_each_worker_oom_once() -> None:
    w = OomWatch.start(0)
    assert not w.worker_oom(0)  # SIGKILL without an OOM: someone killed it
    assert w.worker_oom(1) and not w.worker_oom(1)
    w.survive(1)
    assert w.worker_oom(2)
    assert not w.worker_oom(None)
    w.on_oom_event()
    assert w.worker_oom(None)


async def settle(h: Harness, kid: str) -> None:
    kernel = h.registry.get(kid)
    for _ in range(200):
        if not kernel.oom.pending:
            return
        await asyncio.sleep(0.01)
    raise AssertionError("the OOM was never judged")


def reason_of(h: Harness, kid: str) -> R:
    ended = h.registry.ended(kid)
    assert ended is not None and ended.termination is not None
    return ended.termination.reason


async def test_plain_kill_after_a_survived_oom_is_not_an_oom_kill(
        oh: tuple[Harness, FakeOomCounter, list[str]]) -> None:
    h, counter, _ = oh
    kid = await h.create()
    cid = h.container_id(kid)
    counter.now = 1  # a child process was OOM-killed; the main process lives on
    h.lc.on_container_oom(cid)
    await settle(h, kid)
    assert h.registry.get(kid).oom.survived == 1
    assert h.ledger.read(kid).extra["oom_kills_survived"] == 1
    counter.now, counter.last = None, 1  # docker kill: the cgroup is gone with the container
    h.backend.kill(cid, 137, oom=True)  # Docker's flag is still set from the child's OOM
    await h.lc.on_container_exit(cid)
    assert reason_of(h, kid) == R.SELF_TERMINATED


async def test_oom_kill_of_the_main_process_is_oom_killed(
        oh: tuple[Harness, FakeOomCounter, list[str]]) -> None:
    h, counter, _ = oh
    kid = await h.create()
    cid = h.container_id(kid)
    counter.now = 1
    h.lc.on_container_oom(cid)  # "oom", then "die" at once: no time to settle
    counter.now = None
    h.backend.kill(cid, 137, oom=True)
    await h.lc.on_container_exit(cid)
    assert reason_of(h, kid) == R.OOM_KILLED


async def test_counter_rise_seen_by_stats_alone_is_an_oom_kill(
        oh: tuple[Harness, FakeOomCounter, list[str]]) -> None:
    h, counter, _ = oh
    kid = await h.create()
    cid = h.container_id(kid)
    counter.now, counter.last = None, 1  # the Docker event was missed; the stats saw it
    h.backend.kill(cid, 137, oom=False)
    await h.lc.on_container_exit(cid)
    assert reason_of(h, kid) == R.OOM_KILLED


async def test_worker_oom_and_sigbus_are_reported_once_each(
        oh: tuple[Harness, FakeOomCounter, list[str]]) -> None:
    h, counter, deaths = oh
    kid = await h.create(resource_opts={"shmem": "8m"})
    counter.now = 1
    await h.lc.on_worker_exit(kid, {"seq": 1, "code": -signal.SIGKILL,
                                    "killed_by_runner": False})
    await h.lc.on_worker_exit(kid, {"seq": 1, "code": -signal.SIGKILL,
                                    "killed_by_runner": False})  # the same reply again
    await h.lc.on_worker_exit(kid, {"seq": 2, "code": -signal.SIGBUS,
                                    "killed_by_runner": False})
    await h.lc.on_worker_exit(kid, {"seq": 3, "code": -signal.SIGKILL,
                                    "killed_by_runner": True})  # the runner's own timeout kill
    await h.lc.on_worker_exit(kid, {"seq": 4, "code": -signal.SIGKILL,
                                    "killed_by_runner": False})  # no new OOM: someone's kill
    await h.lc.on_worker_exit(kid, {"seq": 5, "code": 1, "killed_by_runner": False})
    assert deaths == ["oom-killed", "shm-exhausted"]
    errors = [e for e in h.sink.events if e.name == "agent_error"]
    assert [e.payload["context_env"]["reason"] for e in errors] == deaths
    first = errors[0].payload
    assert first["severity"] == "WARNING" and kid in first["message"]
    assert first["context_env"] == {"kernel_id": kid, "session_id": f"sess-{kid}",
                                    "source": "code-worker", "reason": "oom-killed",
                                    "exit_code": "-9"}
    assert "/dev/shm" in errors[1].payload["message"]
    assert h.registry.get(kid).state == S.RUNNING
    emitter = RecordingEmitter()  # the payloads fit the wire model the Manager reads
    for e in errors:
        EventAdapter(emitter).emit(e.name, e.payload)
    assert emitter.names() == ["agent_error", "agent_error"]


def test_reconcile_ignores_docker_flag_after_a_survived_oom() -> None:
    e, c = entry("k1"), container("c1", "k1", running=False, code=137, oom=True)
    assert plan_reconcile({"k1": e}, [c]) == [CleanDead("k1", e, (c,), R.OOM_KILLED, 137)]
    e.extra["oom_kills_survived"] = 1
    assert plan_reconcile({"k1": e}, [c]) == [CleanDead("k1", e, (c,), R.SELF_TERMINATED, 137)]
