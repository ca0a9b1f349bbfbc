"""The node survives its own engine (issue 11): random Docker API faults at every verb the
lifecycle uses (500s, timeouts, replies lost after the work was done, hung calls) while create,
destroy, restart, container deaths and the periodic sync run side by side through the RPC facade.

Seeded random runs with a fixed count (each seed replays exactly). After every run, with the
engine healed and one janitor pass (the periodic sync):

* every client call (create, destroy, restart) got an answer within its bound, far shorter
  than a hung engine call, and every error was a typed BerthError; the agent's own work (a
  death heard from Docker, a sync pass) may wait out a hung call but ends;
* every kernel ever asked for is RUNNING (its container running) or TERMINATED with a cause;
* nothing leaked: the containers, scratch dirs, ledgers, host ports and slot allocations are
  exactly those of the RUNNING kernels; and after destroying those, nothing at all is held.
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest
from support.facade import facade_over

from berth.errors import BerthError
from berth.kernel.ledger import LEDGER_FILENAME
from berth.types import KERNEL_ID_LABEL, OWNER_LABEL, KernelState

from .harness import AGENT_ID, PORT_RANGE, Harness, build, kernel_config, new_id

SEEDS = range(10)
STEPS = 30
DEADLINE = 0.4  # every phase deadline of the lifecycle under test
HANG = 5.0  # a hung engine call, far past every deadline
CALL_BOUND = 3.5  # a client call answering later than this hung with the engine
INTERNAL_BOUND = HANG + 10 * DEADLINE  # the agent's own work waits out at most one hang
FAULT_VERBS = ("create", "start", "stop", "remove", "kill_and_remove", "inspect", "list", "logs",
               "image_inspect")


class NoVfolderHosts:
    """No storage proxy: a kernel config's mounts stay as they are."""

    async def resolve_config(self, config: dict[str, Any]) -> dict[str, Any]:
        return config


class Run:
    """One seeded run: the harness, the facade over it, and what the client saw."""

    def __init__(self, h: Harness, rng: random.Random) -> None:
        self.h, self.rng = h, rng
        self.facade = facade_over(AGENT_ID, registry=h.registry, lifecycle=h.lc,
                                          backend=h.backend, vfolder_hosts=NoVfolderHosts())
        self.asked: list[str] = []  # every kernel id a create was sent for
        self.untyped: list[tuple[str, BaseException]] = []
        self.unanswered: list[str] = []
        self.background: list[asyncio.Future[None]] = []  # the agent's own work, spawned

    async def call(self, what: str, work: Awaitable[Any], bound: float = CALL_BOUND) -> None:
        try:
            async with asyncio.timeout(bound):
                await work
        except TimeoutError:
            self.unanswered.append(what)
        except BerthError:
            pass  # a typed answer is an answer
        except Exception as exc:  # noqa: BLE001 - anything untyped is what the test looks for
            self.untyped.append((what, exc))

    def running(self) -> list[str]:
        return [k.kernel_id for k in self.h.registry.live() if k.state == KernelState.RUNNING]

    # ------------------------------------------------------------------ operations
    async def create(self) -> None:
        kids = [new_id() for _ in range(self.rng.choice((1, 1, 2)))]
        self.asked += kids
        await self.call("create", self.facade.create_kernels(
            f"sess-{kids[0]}", kids, [kernel_config() for _ in kids]))

    async def destroy(self) -> None:
        if kids := [k.kernel_id for k in self.h.registry.live()]:
            kid = self.rng.choice(kids)
            await self.call("destroy", self.facade.destroy_kernel(kid, f"sess-{kid}"))

    async def restart(self) -> None:
        if kids := self.running():
            kid = self.rng.choice(kids)
            await self.call("restart", self.facade.restart_kernel(f"sess-{kid}", kid))

    async def die(self) -> None:
        """A container ends by itself; the agent hears it as a Docker ``die`` event and handles
        it in a task of its own (as the event watcher does)."""
        running = sorted(self.h.backend.running_ids())
        if running:
            cid = self.rng.choice(running)
            self.h.backend.kill(cid, self.rng.choice((0, 1, 137)))
            self.background.append(asyncio.ensure_future(self.call(
                "die", self.h.lc.on_container_exit(cid), INTERNAL_BOUND)))

    async def sync(self) -> None:
        """A periodic sync pass, in the agent's own task."""
        self.background.append(asyncio.ensure_future(self.call(
            "sync", self.h.reconciler().sync(), INTERNAL_BOUND)))

    def pick(self) -> Callable[[], Awaitable[None]]:
        ops: list[tuple[Callable[[], Awaitable[None]], int]] = [
            (self.create, 5), (self.destroy, 2), (self.restart, 2), (self.die, 1),
            (self.sync, 1)]
        return self.rng.choices([op for op, _ in ops], weights=[w for _, w in ops])[0]


def owned_containers(h: Harness) -> dict[str, str]:
    """container id → kernel id, for every container with this agent's owner label."""
    return {c.id: c.labels.get(KERNEL_ID_LABEL, "") for c in h.backend.containers.values()
            if c.labels.get(OWNER_LABEL) == AGENT_ID}


def assert_holds_exactly_the_running(h: Harness) -> None:
    live = h.registry.live()
    assert all(k.state == KernelState.RUNNING for k in live), [
        (k.kernel_id, k.state) for k in live]
    running = {k.kernel_id for k in live}
    containers = owned_containers(h)
    assert sorted(containers.values()) == sorted(running), "containers leaked or lost"
    for kernel in live:
        assert kernel.container_id in containers
        assert h.backend.containers[kernel.container_id].running
    assert {p.name for p in h.scratch.root.iterdir()} == running, "scratch dirs leaked"
    ledgers = {p.parent.parent.name for p in h.scratch.root.glob(f"*/config/{LEDGER_FILENAME}")}
    assert ledgers == running, "ledgers leaked"
    held = [p for k in live for ps in (*k.host_ports.values(), k.tls_ports.values()) for p in ps]
    size = PORT_RANGE[1] - PORT_RANGE[0] + 1
    assert size - h.ports.free_count == len(held), "host ports leaked"
    assert set(h.manager.allocations()) == running, "slot allocations leaked"


@pytest.mark.timeout(120)
@pytest.mark.parametrize("seed", SEEDS)
async def test_random_engine_faults_leak_nothing_and_every_call_answers(
        tmp_path: Path, seed: int) -> None:
    h = await build(tmp_path, preparing_timeout=DEADLINE, creating_timeout=DEADLINE,
                    terminating_timeout=DEADLINE, stop_grace=0.1)
    run = Run(h, random.Random(seed))
    faults = h.backend.inject_faults(random.Random(seed + 1000), rate=0.2, verbs=FAULT_VERBS,
                                     hang_seconds=HANG)
    try:
        for _ in range(STEPS):  # one to three operations side by side per step
            await asyncio.gather(*(run.pick()() for _ in range(run.rng.randint(1, 3))))
        h.backend.heal()
        await asyncio.gather(*run.background)
        await run.call("sync", h.reconciler().sync())  # the janitor's next pass, healed

        assert faults.injected, "the run injected no fault: it tested nothing"
        assert not run.unanswered, f"calls that never answered: {run.unanswered}"
        assert not run.untyped, f"untyped errors reached the client: {run.untyped}"
        for kid in run.asked:
            kernel, ended = h.registry.find(kid), h.registry.ended(kid)
            if kernel is not None:
                assert kernel.state == KernelState.RUNNING, (kid, kernel.state)
            else:
                assert ended is not None, f"kernel {kid} vanished without an end"
                assert ended.state == KernelState.TERMINATED
                assert ended.termination is not None and ended.termination.reason, kid
                assert "kernel_terminated" in h.sink.names(kid), kid
        assert_holds_exactly_the_running(h)

        for kid in run.running():
            await run.facade.destroy_kernel(kid, f"sess-{kid}")
        assert not h.registry.live()
        for kid in run.asked:
            h.assert_released(kid)
        assert not owned_containers(h)
    finally:
        h.backend.heal()
        await h.lc.close()


async def test_fault_kinds_act_as_documented(tmp_path: Path) -> None:
    """The injector itself: 500s and timeouts change nothing, a lost reply does the work, a
    hang holds the call; a seeded injector replays the same faults."""
    h = await build(tmp_path)
    backend = h.backend
    config = {"Image": "berth/busybox:latest", "Labels": {OWNER_LABEL: AGENT_ID}}
    for kind, created in (("error", False), ("timeout", False), ("lost", True)):
        backend.inject_faults(random.Random(0), rate=1.0, kinds=[kind], verbs=["create"])
        with pytest.raises(BerthError) as info:
            await backend.create(f"c-{kind}", config)
        assert (getattr(info.value, "data", {}).get("status") == 500) == (kind == "error")
        assert any(c.name == f"c-{kind}" for c in backend.containers.values()) == created
    backend.inject_faults(random.Random(0), rate=1.0, kinds=["hang"], verbs=["inspect"],
                          hang_seconds=30)
    hung = asyncio.ensure_future(backend.inspect("c-lost"))
    await asyncio.sleep(0.2)
    assert not hung.done()
    hung.cancel()
    backend.heal()
    assert (await backend.inspect("c-lost")).name == "c-lost"

    def draws(seed: int) -> list[str | None]:
        f = backend.inject_faults(random.Random(seed), rate=0.5)
        return [f.draw("start", "x") for _ in range(50)]
    assert draws(7) == draws(7) and draws(7) != draws(8)
    backend.heal()
    assert await backend.ping()
    backend.inject_faults(random.Random(0), rate=1.0, kinds=["error"], verbs=["ping"])
    assert not await backend.ping()  # the seam's ping answers False, never raises
    backend.heal()
    await h.lc.close()
