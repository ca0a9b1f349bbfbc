"""A starting kernel is woken, not polled: its runner's ready FIFO, its container's exit notice.

The FIFO sits in a directory the kernel's user can write, so a byte in it is only a wake-up:
the lifecycle confirms with the runner (``probe_ready``) and asks nothing before it wakes.
"""

from __future__ import annotations

import asyncio
import os
import stat
import time
from pathlib import Path

import pytest

from berth.errors import KernelStartupFailed
from berth.kernel import lifecycle
from berth.runner.kernel_side.protocol import READY_FIFO
from berth.types import KernelState as S
from berth.types import TerminationReason as R

from .harness import PY_IMAGE, FakeRunner, Harness, build, kernel_config, new_id


async def started(h: Harness, kid: str) -> tuple[asyncio.Task[object], FakeRunner]:
    """Begin a Python kernel's create; return once the lifecycle waits for its runner."""
    task: asyncio.Task[object] = asyncio.ensure_future(
        h.lc.create(kernel_config(image=PY_IMAGE), kid, "s"))
    while not h.runners.made:
        await asyncio.sleep(0.005)
    return task, h.runners.made[-1]


async def settle(seconds: float = 0.2) -> None:
    await asyncio.sleep(seconds)


async def test_the_agent_wakes_on_the_signal_and_not_before(h: Harness) -> None:
    h.runners.mode = "gate"
    kid = new_id()
    task, runner = await started(h, kid)
    fifo = runner.ready_fifo
    st = fifo.lstat()
    assert stat.S_ISFIFO(st.st_mode) and stat.S_IMODE(st.st_mode) == 0o600
    assert st.st_uid == h.registry.get(kid).uid
    await settle()
    assert runner.probes == 0 and not task.done()  # nothing asked while nothing woke it
    assert h.registry.get(kid).state == S.CREATING
    h.runners.gate.set()  # the runner turns ready and writes the FIFO
    await asyncio.wait_for(task, 1.0)
    assert runner.probes == 1
    assert h.registry.get(kid).state == S.RUNNING
    assert not os.path.lexists(fifo)  # gone with the wait: nothing keeps reading it


async def test_a_forged_signal_does_not_make_a_starting_runner_ready(h: Harness) -> None:
    h.runners.mode = "refused"  # bound or not, the runner does not say ready
    kid = new_id()
    task, runner = await started(h, kid)
    for _ in range(3):  # the kernel's user (a bootstrap script, say) writes the FIFO
        runner.signal()
        await settle(0.05)
    assert 1 <= runner.probes <= 3
    assert not task.done() and h.registry.get(kid).state == S.CREATING
    probes = runner.probes
    await settle()
    assert runner.probes == probes  # and it does not turn into polling
    h.runners.mode = "ready"
    runner.signal()
    await asyncio.wait_for(task, 1.0)
    assert h.registry.get(kid).state == S.RUNNING


async def test_a_container_dying_before_ready_fails_the_create_fast(h: Harness) -> None:
    h.runners.mode = "refused"
    kid = new_id()
    task, runner = await started(h, kid)
    cid = h.container_id(kid)
    h.backend.kill(cid, 3)
    t0 = time.monotonic()
    await h.lc.on_container_exit(cid)  # the agent's Docker "die" event
    with pytest.raises(KernelStartupFailed, match="exited with 3") as err:
        await asyncio.wait_for(task, 1.0)
    assert time.monotonic() - t0 < lifecycle.ALIVE_CHECK_SECONDS / 5
    assert err.value.data["exit_code"] == 3
    assert runner.probes == 0
    [ended] = [e for e in h.sink.of(kid) if e.name == "kernel_terminated"]
    assert ended.payload["reason"] == R.FAILED_TO_START
    h.assert_released(kid)


async def test_an_exit_notice_of_a_live_container_does_not_fail_the_create(h: Harness) -> None:
    h.runners.mode = "gate"
    kid = new_id()
    task, _ = await started(h, kid)
    await h.lc.on_container_exit(h.container_id(kid))  # stale: the container runs
    await settle(0.05)
    assert not task.done()
    h.runners.gate.set()
    await asyncio.wait_for(task, 1.0)
    assert h.registry.get(kid).state == S.RUNNING


async def test_without_a_signal_the_runner_is_still_asked_now_and_then(
        h: Harness, monkeypatch: pytest.MonkeyPatch) -> None:
    """The kernel's user removed the FIFO (or the events stream broke): slower, not stuck."""
    monkeypatch.setattr(lifecycle, "ALIVE_CHECK_SECONDS", 0.1)
    h.runners.mode = "refused"
    kid = new_id()
    task, runner = await started(h, kid)
    runner.ready_fifo.unlink()
    h.runners.mode = "ready"  # ready, but its write found no FIFO
    await asyncio.wait_for(task, 2.0)
    assert runner.probes >= 1
    assert ("inspect", h.container_id(kid)) in h.backend.calls


async def test_a_directory_in_place_of_the_fifo_costs_the_signal_not_the_kernel(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(lifecycle, "ALIVE_CHECK_SECONDS", 0.1)
    h = await build(tmp_path)
    try:
        kid = new_id()
        await h.create(kid, image=PY_IMAGE)  # made once, then restarted with a dir in place
        layout = h.lc.layouts[kid]
        (layout.ipc_dir / READY_FIFO).mkdir()
        (layout.ipc_dir / READY_FIFO / "x").write_text("")
        await asyncio.wait_for(h.lc.restart(kid), 2.0)
        assert h.registry.get(kid).state == S.RUNNING
    finally:
        await h.lc.close()


async def test_waiting_for_runners_holds_no_creation_slot(tmp_path: Path) -> None:
    h = await build(tmp_path, creation_concurrency=1)
    h.runners.mode = "gate"
    try:
        kids = [new_id() for _ in range(3)]
        tasks = [asyncio.ensure_future(h.lc.create(kernel_config(image=PY_IMAGE), k, "s"))
                 for k in kids]
        deadline = time.monotonic() + 2.0
        while len(h.runners.made) < 3 and time.monotonic() < deadline:
            await asyncio.sleep(0.01)
        assert len(h.runners.made) == 3  # all three wait for their runners at once
        assert all(h.backend.containers[h.container_id(k)].running for k in kids)
        h.runners.gate.set()
        await asyncio.wait_for(asyncio.gather(*tasks), 2.0)
    finally:
        await h.lc.close()
