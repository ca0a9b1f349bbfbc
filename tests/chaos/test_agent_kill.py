"""kill -9 of the agent in the middle of a create burst and of a destroy burst, then a restart:
every client call answers (a result or a typed error), every kernel that came back is RUNNING
with its own container, the others left nothing, and the leak audit is clean after each
restart and after the last reset."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from support.leaks import assert_no_leaks, fd_count
from support.procs import AgentProcess

from berth.errors import BerthError

from .conftest import AgentFactory, eventually, kernel_config, live_kernels, new_id, warm_up

BURST = 6
CALL_BOUND = 90.0  # a call that has not answered by then hangs


async def _call(agent: AgentProcess, method: str, *args: Any) -> Any:
    """One RPC on its own connection; a typed error is an answer, as is a result."""
    try:
        async with agent.client(timeout=CALL_BOUND) as c:
            return await asyncio.wait_for(getattr(c, method)(*args), CALL_BOUND)
    except BerthError as exc:
        return exc


async def _when_some_running(agent: AgentProcess, kids: list[str], count: int) -> None:
    async def enough() -> bool:
        live = await live_kernels(agent)
        return sum(1 for k in kids if live.get(k, {}).get("state") == "RUNNING") >= count
    await eventually(enough, timeout=60, what=f"{count} kernels of the burst running",
                     log=agent.log)


async def _restart(agent: AgentProcess) -> None:
    agent.kill9()
    await agent.start()


@pytest.mark.timeout(300)
async def test_kill9_during_create_and_destroy_bursts_then_restart(
        agent_factory: AgentFactory) -> None:
    agent = await agent_factory(
        container_toml="stop-grace-sec = 2",
        extra_toml="[kernel-lifecycles]\ncreating-timeout-sec = 60\n")
    await warm_up(agent)
    baseline = fd_count(agent.proc.pid)  # type: ignore[union-attr]

    # A create burst, one kernel per call, cut by kill -9 once two of them run.
    kids = [new_id() for _ in range(BURST)]
    calls = [asyncio.ensure_future(_call(agent, "create_kernels", f"s-{k}", [k],
                                         [kernel_config()], {})) for k in kids]
    await _when_some_running(agent, kids, 2)
    agent.kill9()
    outcomes = await asyncio.wait_for(asyncio.gather(*calls), CALL_BOUND + 10)
    assert all(isinstance(o, (list, BerthError)) for o in outcomes), outcomes
    await agent.start()
    after_create = await assert_no_leaks(agent, fd_baseline=baseline)
    survivors = set(after_create.kernels)
    assert survivors <= set(kids)
    assert len(survivors) >= 2, "the kernels running at the kill were not adopted"

    # A destroy burst over the survivors, cut by kill -9 after the first answer.
    destroys = [asyncio.ensure_future(_call(agent, "destroy_kernel", k, f"s-{k}"))
                for k in sorted(survivors)]
    done, _ = await asyncio.wait(destroys, return_when=asyncio.FIRST_COMPLETED, timeout=60)
    assert done, "no destroy answered"
    agent.kill9()
    outcomes = await asyncio.wait_for(asyncio.gather(*destroys), CALL_BOUND + 10)
    assert all(o is None or isinstance(o, BerthError) for o in outcomes), outcomes
    await agent.start()
    after_destroy = await assert_no_leaks(agent, fd_baseline=baseline)
    assert set(after_destroy.kernels) < survivors, "the destroy that answered was undone"

    # The node works after all this, then gives everything back.
    fresh = new_id()
    assert isinstance(await _call(agent, "create_kernels", f"s-{fresh}", [fresh],
                                  [kernel_config()], {}), list)
    await _call(agent, "reset_agent")
    final = await assert_no_leaks(agent, fd_baseline=baseline)
    assert not final.kernels and not final.containers
