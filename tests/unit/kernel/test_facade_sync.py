"""sync_kernel_registry through the RPC facade: the Manager's view wins."""

from __future__ import annotations

from support.facade import facade_over as build_facade

from berth.daemon.facade import AgentFacade
from berth.types import KernelState

from .harness import Harness


def facade_over(h: Harness) -> AgentFacade:
    return build_facade("ag-unit", lifecycle=h.lc)


async def test_manager_view_reconciles_both_ways(h: Harness) -> None:
    kept, orphan = await h.create(), await h.create()
    facade = facade_over(h)
    await facade.sync_kernel_registry([(kept, "s1"), ("gone-kernel", "s2")])
    assert h.lc.registry.get(kept).state == KernelState.RUNNING
    assert h.lc.registry.find(orphan) is None
    ended = h.lc.registry.ended(orphan)
    assert ended is not None and ended.termination is not None
    assert str(ended.termination.reason) == "not-found-in-manager"
    gone = [e for e in h.sink.events if e.payload.get("kernel_id") == "gone-kernel"]
    assert [(e.name, e.payload["reason"]) for e in gone] == [
        ("kernel_terminated", "already-terminated")]
