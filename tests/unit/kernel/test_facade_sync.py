"""sync_kernel_registry through the RPC facade: the Manager's view wins."""

from __future__ import annotations

import uuid
from typing import Any

import pytest
from support.facade import facade_over as build_facade

from berth.daemon.facade import AgentFacade
from berth.errors import AgentIdMismatch, InvalidArgument
from berth.types import KernelState

from .harness import Harness, kernel_config, new_id


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


@pytest.mark.parametrize("pairs", [[["only-a-kernel"]], [("k", "s", "x")], "ks", [[1, 2]],
                                   [("k", None)], None, [("k", "s"), "ks"]])
async def test_anything_but_pairs_is_refused_before_anything_is_ended(
        h: Harness, pairs: Any) -> None:
    kept = await h.create()
    with pytest.raises(InvalidArgument) as err:
        await facade_over(h).sync_kernel_registry(pairs)
    assert err.value.data["field"] == "raw_kernel_session_ids"
    assert h.lc.registry.get(kept).state == KernelState.RUNNING
    assert [e.name for e in h.sink.events if e.name == "kernel_terminated"] == []


async def test_a_managers_uuids_name_kernels_as_their_strings(h: Harness) -> None:
    kept = await h.create()
    await facade_over(h).sync_kernel_registry([(uuid.UUID(kept), uuid.uuid4())])
    assert h.lc.registry.get(kept).state == KernelState.RUNNING


async def test_create_kernels_naming_a_kernel_twice_is_refused_whole(h: Harness) -> None:
    kid = new_id()
    with pytest.raises(InvalidArgument) as err:
        await facade_over(h).create_kernels("s", [kid, kid], [kernel_config(), kernel_config()])
    assert err.value.data["field"] == "raw_kernel_ids"
    assert h.lc.registry.find(kid) is None and h.backend.containers == {}


@pytest.mark.parametrize("opts", ["x", ["x"], {"arguments": "x"}, {"arguments": ["--a"]},
                                  {"envs": "A=1"}])
async def test_start_service_with_malformed_opts_is_refused(h: Harness, opts: Any) -> None:
    kid = await h.create()
    with pytest.raises(InvalidArgument):
        await facade_over(h).start_service(kid, "web", opts)


@pytest.mark.parametrize("opts", [{"exec": ["echo", "hi"]}, {"exec": 123}, {"build": {"a": 1}},
                                  "exec"])
async def test_a_batch_run_whose_steps_are_not_commands_is_refused(
        h: Harness, opts: Any) -> None:
    kid = await h.create()
    with pytest.raises(InvalidArgument):
        await facade_over(h).execute("s", kid, 2, "r1", "batch", "", opts)


@pytest.mark.parametrize("timeout", [float("nan"), float("inf"), -1.0, True])
async def test_a_batch_job_with_a_timeout_that_is_no_duration_is_refused(
        h: Harness, timeout: Any) -> None:
    kid = await h.create()
    with pytest.raises(InvalidArgument):
        await facade_over(h).trigger_batch_execution("s", kid, "true", timeout)


@pytest.mark.parametrize("call", ["health", "scan_gpu_alloc_map", "get_local_config",
                                  "assign_port", "get_status"])
async def test_node_calls_for_another_agent_are_refused(h: Harness, call: str) -> None:
    with pytest.raises(AgentIdMismatch):
        await getattr(facade_over(h), call)(agent_id="someone-else")
