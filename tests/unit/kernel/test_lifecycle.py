"""KernelLifecycle over FakeBackend: create, its rollback at every step, destroy, exits, restart."""

from __future__ import annotations

import asyncio
import logging
import time
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest

from berth.backend.base import RemovedContainer
from berth.daemon.adapters import EventAdapter
from berth.errors import (
    BackendError,
    ContainerConflict,
    DeadlineExceeded,
    ImageNotAvailable,
    ImagePullFailed,
    InvalidKernelSpec,
    KernelNotFound,
    KernelStartupFailed,
    KernelStateError,
    UnsupportedSlot,
)
from berth.events import RecordingEmitter
from berth.kernel.container_config import container_name
from berth.types import KernelState as S
from berth.types import TerminationReason as R

from .harness import AGENT_ID, PY_IMAGE, FakeTLSProxy, Harness, build, kernel_config, new_id


def terminated(h: Harness, kid: str) -> dict[str, Any]:
    [event] = [e for e in h.sink.of(kid) if e.name == "kernel_terminated"]
    payload: dict[str, Any] = event.payload
    return payload


# ---------------------------------------------------------------------- create
async def test_create_goes_preparing_creating_running(h: Harness) -> None:
    kid = new_id()
    await h.lc.create(kernel_config(), kid, "sess")
    assert [(e.name, e.state) for e in h.sink.of(kid)] == [
        ("kernel_preparing", S.PREPARING), ("kernel_creating", S.CREATING),
        ("kernel_started", S.RUNNING)]
    assert all(e.broadcast for e in h.sink.of(kid))
    kernel = h.registry.get(kid)
    assert kernel.state == S.RUNNING and kernel.container_id
    container = h.backend.containers[kernel.container_id]
    assert container.running and container.name == container_name(kid)
    assert container.labels["ai.backend.kernel-id"] == kid
    assert container.labels["ai.backend.owner"] == AGENT_ID
    assert container.config["HostConfig"]["Init"] is True
    [host_port] = kernel.host_ports["web"]
    assert container.port_bindings == {8080: host_port}
    assert h.manager.get(kid) is not None
    assert kernel.pid == container.pid > 0


async def test_create_result_and_started_event_shape(h: Harness) -> None:
    kid = new_id()
    result = await h.lc.create(kernel_config(), kid, "sess")
    kernel = h.registry.get(kid)
    assert result["id"] == kid and result["container_id"] == kernel.container_id
    assert result["kernel_host"] == "127.0.0.1"
    assert result["resource_spec"]["slots"] == {"cpu": "1", "mem": str(256 << 20)}
    assert kernel.allocation is not None
    assert result["resource_spec"]["allocations"] == kernel.allocation.to_json()
    [svc] = result["service_ports"]
    assert svc["name"] == "web" and svc["protocol"] == "http"
    assert svc["container_ports"] == [8080] and svc["host_ports"] == kernel.host_ports["web"]
    started = h.sink.of(kid)[-1].payload
    assert started["creation_info"]["container_id"] == kernel.container_id
    # every payload fits the wire models the Manager reads
    emitter = RecordingEmitter()
    adapter = EventAdapter(emitter)
    for e in h.sink.events:
        adapter.emit(e.name, e.payload, broadcast=e.broadcast)
    assert emitter.names() == ["kernel_preparing", "kernel_creating", "kernel_started"]


async def test_ledger_holds_the_running_kernel(h: Harness) -> None:
    kid = await h.create(preopen_ports=[8081])
    entry = h.ledger.read(kid)
    kernel = h.registry.get(kid)
    assert entry is not None
    assert (entry.state, entry.container_id, entry.agent_id) == ("RUNNING", kernel.container_id,
                                                                AGENT_ID)
    assert entry.host_ports == kernel.host_ports and set(entry.host_ports) == {"web", "8081"}
    assert kernel.allocation is not None and entry.allocation == kernel.allocation.to_json()
    assert entry.spec["image"]["canonical"] == "berth/busybox:latest"
    layout = h.lc.layouts[kid]
    assert "ALLOCATION=" in (layout.config_dir / "resource.txt").read_text()


async def test_ledger_is_written_before_the_container_id_is_known(h: Harness) -> None:
    kid = new_id()
    gate = h.backend.hold("create")
    task = asyncio.ensure_future(h.lc.create(kernel_config(), kid, "sess"))
    await gate.reached.wait()
    entry = h.ledger.read(kid)  # the container exists, the agent has not heard its id yet
    assert entry is not None and entry.container_id is None and entry.state == "CREATING"
    assert entry.host_ports["web"]  # ports are recorded before they are published
    gate.release()
    await task
    assert h.ledger.read(kid).container_id == h.container_id(kid)


def ledger_when_running(h: Harness, kid: str, *, old_container: str | None = None
                        ) -> asyncio.Task[Any]:
    """Slows every ledger write (a busy disk) and returns a task that waits until the registry
    shows ``kid`` RUNNING (in another container than ``old_container``) and then reads what
    its ledger says at that moment, with the container the registry shows."""
    write = h.ledger.write_encoded

    def slow_write(kernel_id: Any, payload: bytes) -> None:
        time.sleep(0.05)
        write(kernel_id, payload)
    h.ledger.write_encoded = slow_write  # type: ignore[method-assign]

    async def watch() -> Any:
        while True:
            kernel = h.registry.find(kid)
            if (kernel is not None and kernel.state == S.RUNNING
                    and kernel.container_id != old_container):
                return h.ledger.read(kid), kernel.container_id
            await asyncio.sleep(0)
    return asyncio.ensure_future(watch())


async def test_a_kernel_is_running_on_disk_before_it_is_running_to_anyone(h: Harness) -> None:
    # A status call that sees RUNNING, then a crash: the restarted agent must adopt the kernel.
    kid = new_id()
    seen = ledger_when_running(h, kid)
    await h.lc.create(kernel_config(), kid, "sess")
    entry, container_id = await asyncio.wait_for(seen, 5)
    assert (entry.state, entry.container_id) == ("RUNNING", container_id)


async def test_a_restarted_kernel_is_running_on_disk_before_it_is_running_to_anyone(
        h: Harness) -> None:
    kid = await h.create()
    seen = ledger_when_running(h, kid, old_container=h.container_id(kid))
    await h.lc.restart(kid)
    entry, container_id = await asyncio.wait_for(seen, 5)
    assert (entry.state, entry.container_id) == ("RUNNING", container_id)


async def test_missing_image_pulls_first(h: Harness) -> None:
    h.backend.add_remote("reg.local/app:1", labels={"ai.backend.runtime-type": "app"})
    kid = await h.create(image="reg.local/app:1", is_local=False)
    assert [(e.name, e.state) for e in h.sink.of(kid)][:3] == [
        ("kernel_preparing", S.PREPARING), ("kernel_pulling", S.PULLING),
        ("kernel_creating", S.CREATING)]
    assert h.backend.pulls == [("reg.local/app:1", None)]
    assert h.registry.get(kid).state == S.RUNNING


async def test_pull_passes_registry_credentials(h: Harness) -> None:
    h.backend.add_remote("reg.local/app:1", auth={"username": "u", "password": "p"})
    kid = new_id()
    image = {"canonical": "reg.local/app:1", "registry": {"username": "u", "password": "p"}}
    await h.lc.create({**kernel_config(), "image": image}, kid, "s")
    assert h.backend.pulls == [("reg.local/app:1", {"username": "u", "password": "p"})]


# ---------------------------------------------------------------------- create failures
async def test_local_image_missing_fails_without_pulling(h: Harness) -> None:
    kid = new_id()
    with pytest.raises(ImageNotAvailable):
        await h.lc.create(kernel_config(image="nope:1", is_local=True), kid, "s")
    assert h.backend.pulls == []
    assert h.sink.names(kid) == ["kernel_preparing", "kernel_terminated"]
    assert terminated(h, kid)["reason"] == R.FAILED_TO_CREATE
    h.assert_released(kid)
    ended = h.registry.ended(kid)
    assert ended is not None and ended.termination is not None
    assert ended.termination.reason == R.FAILED_TO_CREATE
    assert "nope:1" in ended.termination.detail


async def test_pull_error_event_fails_the_kernel(h: Harness) -> None:
    kid = new_id()
    with pytest.raises(ImagePullFailed, match="manifest unknown"):
        await h.lc.create(kernel_config(image="reg.local/none:1", is_local=False), kid, "s")
    assert h.sink.names(kid) == ["kernel_preparing", "kernel_pulling", "kernel_terminated"]
    h.assert_released(kid)


async def test_docker_create_conflict_rolls_everything_back(h: Harness) -> None:
    kid = new_id()
    h.backend.fail_next("create", ContainerConflict("name in use", status=409))
    with pytest.raises(ContainerConflict):
        await h.lc.create(kernel_config(preopen_ports=[8081]), kid, "s")
    assert terminated(h, kid)["reason"] == R.FAILED_TO_CREATE
    h.assert_released(kid)


async def test_start_failure_removes_the_created_container(h: Harness) -> None:
    kid = new_id()
    h.backend.fail_next("start", BackendError("cannot start", status=500))
    with pytest.raises(BackendError, match="cannot start"):
        await h.lc.create(kernel_config(), kid, "s")
    created = [t for v, t in h.backend.calls if v == "create"]
    assert created == [container_name(kid)]
    assert ("kill_and_remove", h.registry.ended(kid).container_id) in h.backend.calls
    assert terminated(h, kid)["reason"] == R.FAILED_TO_CREATE
    h.assert_released(kid)


async def test_runner_never_ready_hits_the_creating_deadline(tmp_path: Path) -> None:
    h = await build(tmp_path, creating_timeout=0.3)
    h.runners.mode = "never"
    kid = new_id()
    try:
        with pytest.raises(DeadlineExceeded) as err:
            await h.lc.create(kernel_config(image=PY_IMAGE), kid, "s")
    finally:
        await h.lc.close()
    assert err.value.kernel_id == kid and err.value.data["deadline"] == 0.3
    assert terminated(h, kid)["reason"] == R.DEADLINE
    [runner] = h.runners.made
    assert runner.closed and runner.socket_path.name == "runner.sock"
    h.assert_released(kid)


async def test_container_dying_before_ready_is_failed_to_start(h: Harness) -> None:
    h.runners.mode = "refused"
    kid = new_id()
    task = asyncio.ensure_future(h.lc.create(kernel_config(image=PY_IMAGE), kid, "s"))
    while not h.runners.made:
        await asyncio.sleep(0.01)
    h.backend.kill(h.container_id(kid), 1)
    await h.lc.on_container_exit(h.container_id(kid))  # the agent's die event
    with pytest.raises(KernelStartupFailed, match="exited with 1"):
        await task
    payload = terminated(h, kid)
    assert payload["reason"] == R.FAILED_TO_START and payload["exit_code"] == 1
    h.assert_released(kid)


async def test_preopen_port_colliding_with_image_service_is_invalid(h: Harness) -> None:
    kid = new_id()
    with pytest.raises(InvalidKernelSpec) as err:
        await h.lc.create(kernel_config(preopen_ports=[8080]), kid, "s")
    assert err.value.field == "preopen_ports"
    assert h.backend.containers == {}
    h.assert_released(kid)


async def test_invalid_spec_is_refused_before_anything_is_held(h: Harness) -> None:
    kid = new_id()
    with pytest.raises(InvalidKernelSpec):
        await h.lc.create({"image": {"canonical": "x"}, "resource_slots": {"cpu": 1}}, kid, "s")
    assert h.sink.events == [] and h.registry.find(kid) is None


async def test_slots_are_read_by_the_nodes_slot_types_once(h: Harness) -> None:
    kid = new_id()
    with pytest.raises(UnsupportedSlot):  # refused at the spec, before anything is held
        await h.lc.create(kernel_config(resource_slots={"cpu": "1", "mem": "256m",
                                                        "nope.device": "1"}), kid, "s")
    assert h.sink.events == [] and h.registry.find(kid) is None
    with pytest.raises(InvalidKernelSpec) as err:
        await h.lc.create(kernel_config(resource_slots={"cpu": "1", "mem": "lots"}), kid, "s")
    assert err.value.field == "resource_slots"
    # A slot the node lacks asked at 0 is dropped (the Manager sends zeros for all it knows).
    await h.lc.create(kernel_config(resource_slots={"cpu": "1", "mem": "256MiB",
                                                    "nope.device": "0"}), kid, "s")
    kernel = h.registry.get(kid)
    assert kernel.spec.resource_slots == {"cpu": Decimal(1), "mem": Decimal(256 << 20)}
    assert kernel.allocation is not None
    assert kernel.allocation.requested == kernel.spec.resource_slots


@pytest.mark.parametrize("waiting_on", ["runner", "engine create"])
async def test_cancelled_create_rolls_back(h: Harness, waiting_on: str) -> None:
    # The caller gives up (an RPC deadline) while the runner starts, or while the engine
    # makes the container: the container the engine made is removed all the same.
    kid = new_id()
    gate = h.backend.hold("create") if waiting_on == "engine create" else None
    h.runners.mode = "gate"
    task = asyncio.ensure_future(h.lc.create(kernel_config(image=PY_IMAGE), kid, "s"))
    if gate is not None:
        await gate.reached.wait()
    while gate is None and not h.runners.made:
        await asyncio.sleep(0.01)
    task.cancel()
    if gate is not None:
        await asyncio.sleep(0.05)
        gate.release()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert terminated(h, kid)["reason"] == R.FAILED_TO_CREATE
    h.assert_released(kid)


@pytest.mark.parametrize("verb", ["image_inspect", "create", "start"])
async def test_destroy_during_create_cancels_it_and_leaves_nothing(h: Harness, verb: str) -> None:
    # The destroy comes while an engine call of the create is in flight; a container create
    # the engine got is answered first (the container is made), and the create's rollback
    # removes what it made.
    kid = new_id()
    gate = h.backend.hold(verb)
    create = asyncio.ensure_future(h.lc.create(kernel_config(), kid, "s"))
    await gate.reached.wait()
    destroy = asyncio.ensure_future(h.lc.destroy(kid))
    await asyncio.sleep(0.05)
    assert destroy.done() == (verb != "create")  # waits for the engine to answer a create
    gate.release()
    await asyncio.wait_for(destroy, 5)
    with pytest.raises(KernelStartupFailed, match="user-requested during its creation"):
        await create
    assert terminated(h, kid)["reason"] == R.USER_REQUESTED
    assert h.sink.names(kid).count("kernel_terminated") == 1
    h.assert_released(kid)
    await h.lc.destroy(kid)  # a second destroy of the ended kernel is no error


async def test_destroy_during_restart_ends_it_without_a_restart_failure(h: Harness) -> None:
    kid = await h.create()
    gate = h.backend.hold("create")
    restart = asyncio.ensure_future(h.lc.restart(kid))
    await gate.reached.wait()
    destroy = asyncio.ensure_future(h.lc.destroy(kid))
    await asyncio.sleep(0.05)
    gate.release()
    await asyncio.wait_for(destroy, 5)
    with pytest.raises(KernelStateError, match="ended during its restart"):
        await restart
    assert terminated(h, kid)["reason"] == R.USER_REQUESTED
    assert "agent_error" not in h.sink.names(kid) and not [
        e for e in h.sink.events if e.name == "agent_error"]
    h.assert_released(kid)


async def test_duplicate_kernel_id_is_refused_and_leaves_the_first_alone(h: Harness) -> None:
    kid = await h.create()
    with pytest.raises(Exception, match=kid):
        await h.create(kid)
    assert h.registry.get(kid).state == S.RUNNING
    assert h.backend.containers[h.container_id(kid)].running


# ---------------------------------------------------------------------- destroy
async def test_destroy_records_user_requested_and_is_idempotent(h: Harness) -> None:
    kid = await h.create()
    cid = h.container_id(kid)
    await h.lc.destroy(kid)
    payload = terminated(h, kid)
    assert payload["reason"] == R.USER_REQUESTED and payload["exit_code"] == 137  # killed
    h.assert_released(kid)
    await h.lc.destroy(kid)  # already gone: not an error, nothing emitted twice
    assert h.sink.names(kid).count("kernel_terminated") == 1
    assert ("kill_and_remove", cid) in h.backend.calls
    with pytest.raises(KernelNotFound):
        await h.lc.destroy(new_id())


async def test_concurrent_double_destroy_cleans_once(h: Harness) -> None:
    kid = await h.create()
    cid = h.container_id(kid)
    gate = h.backend.hold("kill_and_remove")
    first = asyncio.ensure_future(h.lc.destroy(kid))
    await gate.reached.wait()
    second = asyncio.ensure_future(h.lc.destroy(kid, reason=R.AGENT_RESET))
    await asyncio.sleep(0.01)
    assert not second.done()  # waits for the teardown in flight
    gate.release()
    await asyncio.gather(first, second)
    assert [v for v, t in h.backend.calls if t == cid].count("kill_and_remove") == 1
    assert h.sink.names(kid).count("kernel_terminated") == 1
    assert terminated(h, kid)["reason"] == R.USER_REQUESTED
    h.assert_released(kid)


async def test_destroy_of_a_container_removed_behind_our_back(h: Harness) -> None:
    kid = await h.create()
    await h.backend.remove(h.container_id(kid))
    await h.lc.destroy(kid)
    assert terminated(h, kid)["reason"] == R.USER_REQUESTED
    h.assert_released(kid)


@pytest.mark.parametrize(("code", "oom", "reason"), [
    (0, False, R.SELF_TERMINATED),
    (137, True, R.OOM_KILLED),
    (137, False, R.SELF_TERMINATED),
    (135, False, R.SHM_EXHAUSTED),
])
async def test_container_dying_by_itself(h: Harness, code: int, oom: bool, reason: R) -> None:
    kid = await h.create()
    cid = h.container_id(kid)
    h.backend.kill(cid, code, oom=oom)
    await h.lc.on_container_exit(cid)
    payload = terminated(h, kid)
    assert payload["reason"] == reason and payload["exit_code"] == code
    # the exit judged from the dead container wins over anything the removal says
    assert [v for v, t in h.backend.calls if t == cid][-1] == "kill_and_remove"
    h.assert_released(kid)
    ended = h.registry.ended(kid)
    assert ended is not None and ended.termination is not None
    assert (ended.termination.reason, ended.termination.exit_code) == (reason, code)


async def test_exit_notice_for_a_running_or_unknown_container_is_ignored(h: Harness) -> None:
    kid = await h.create()
    await h.lc.on_container_exit(h.container_id(kid))  # a stale "die": it runs
    await h.lc.on_container_exit("f" * 64)
    assert h.registry.get(kid).state == S.RUNNING
    assert "kernel_terminated" not in h.sink.names(kid)


async def test_exit_notice_for_a_vanished_container(h: Harness) -> None:
    kid = await h.create()
    cid = h.container_id(kid)
    await h.backend.remove(cid)
    await h.lc.on_container_exit(cid)
    assert terminated(h, kid)["reason"] == R.CONTAINER_NOT_FOUND
    h.assert_released(kid)


async def test_exit_notice_racing_destroy_cleans_once(h: Harness) -> None:
    kid = await h.create()
    cid = h.container_id(kid)
    await asyncio.gather(h.lc.destroy(kid), h.lc.on_container_exit(cid))
    assert h.sink.names(kid).count("kernel_terminated") == 1
    assert terminated(h, kid)["reason"] == R.USER_REQUESTED
    h.assert_released(kid)


async def test_two_exit_notices_at_once_judge_the_exit_once(
        h: Harness, caplog: pytest.LogCaptureFixture) -> None:
    """Docker's die and destroy events (or a sync) arriving together: one judgement, one
    log line and one event."""
    kid = await h.create()
    cid = h.container_id(kid)
    h.backend.kill(cid, 1)
    with caplog.at_level(logging.WARNING, logger="berth.kernel.lifecycle"):
        await asyncio.gather(*(h.lc.on_container_exit(cid) for _ in range(3)))
    assert caplog.text.count("exited by itself") == 1
    assert h.sink.names(kid).count("kernel_terminated") == 1
    h.assert_released(kid)


async def test_removal_failure_still_releases_the_kernel(h: Harness) -> None:
    kid = await h.create()
    h.backend.fail_next("kill_and_remove", BackendError("engine hiccup", status=500))
    await h.lc.destroy(kid)
    assert h.registry.ended(kid) is not None
    assert terminated(h, kid)["exit_code"] == -1  # the engine never said
    h.assert_released(kid)  # the second try removed it


async def test_destroy_is_one_engine_call_like_docker_rm_f(h: Harness) -> None:
    """No stop, inspect or logs round trips: one forced removal; its answer carries the
    exit code and the output shipped to the log sink before the kernel's end is told."""
    shipped: list[tuple[str, str, str]] = []
    told_at: list[int] = []

    async def sink(kernel_id: str, container_id: str, logs: str) -> None:
        shipped.append((kernel_id, container_id, logs))
        told_at.append(h.sink.names(kernel_id).count("kernel_terminated"))
    h.lc.log_sink = sink
    kid = await h.create()
    cid = h.container_id(kid)
    h.backend.write_log(cid, "".join(f"line {i}\n" for i in range(10_005)))
    mark = len(h.backend.calls)
    await h.lc.destroy(kid)
    assert [c for c in h.backend.calls[mark:] if c[1] == cid] == [("kill_and_remove", cid)]
    [(k, c, text)] = shipped
    assert (k, c) == (kid, cid) and told_at == [0]
    assert text.splitlines() == [f"line {i}" for i in range(5, 10_005)]  # the last 10,000
    assert terminated(h, kid)["exit_code"] == 137
    h.assert_released(kid)


async def test_destroy_without_a_log_sink_asks_for_no_output(
        h: Harness, monkeypatch: pytest.MonkeyPatch) -> None:
    asked: list[int | None] = []
    real = h.backend.kill_and_remove

    async def spy(container_id: str, *, logs_tail: int | None = None) -> RemovedContainer:
        asked.append(logs_tail)
        return await real(container_id, logs_tail=logs_tail)
    monkeypatch.setattr(h.backend, "kill_and_remove", spy)
    await h.lc.destroy(await h.create())
    assert asked == [None]  # the engine is not made to read (or the disk to give) any output


async def test_a_dead_containers_output_is_shipped_with_its_own_exit_code(h: Harness) -> None:
    shipped: list[str] = []

    async def sink(kernel_id: str, container_id: str, logs: str) -> None:
        shipped.append(logs)
    h.lc.log_sink = sink
    kid = await h.create()
    cid = h.container_id(kid)
    h.backend.write_log(cid, "Traceback: boom\n")
    h.backend.kill(cid, 3)
    await h.lc.on_container_exit(cid)
    assert shipped == ["Traceback: boom\n"]
    payload = terminated(h, kid)
    assert (payload["reason"], payload["exit_code"]) == (R.SELF_TERMINATED, 3)
    h.assert_released(kid)


# ---------------------------------------------------------------------- restart
async def test_restart_keeps_ports_and_allocation_with_a_new_container(h: Harness) -> None:
    kid = await h.create(preopen_ports=[8081])
    before = h.registry.get(kid)
    old_cid = h.container_id(kid)
    ports, allocation = dict(before.host_ports), before.allocation
    assert allocation is not None and h.manager.get(allocation.kernel_id) == allocation
    (h.lc.layouts[kid].work_dir / "note.txt").write_text("kept")
    result = await h.lc.restart(kid)
    kernel = h.registry.get(kid)
    assert kernel.state == S.RUNNING
    assert result["container_id"] == kernel.container_id != old_cid
    assert old_cid not in h.backend.containers
    assert kernel.host_ports == ports and kernel.allocation == allocation
    assert h.manager.get(allocation.kernel_id) == allocation  # held throughout, never re-taken
    new = h.backend.containers[h.container_id(kid)]
    assert new.running and set(new.port_bindings.values()) == {p for v in ports.values()
                                                               for p in v}
    assert h.ledger.read(kid).container_id == kernel.container_id
    assert (h.lc.layouts[kid].work_dir / "note.txt").read_text() == "kept"
    assert "kernel_terminated" not in h.sink.names(kid)


async def test_restart_of_a_runner_kernel_opens_a_new_runner(h: Harness) -> None:
    kid = await h.create(image=PY_IMAGE)
    await h.lc.restart(kid)
    first, second = h.runners.made
    assert first.closed and not second.closed and h.lc.runners[kid] is second


async def test_restart_failure_terminates_the_kernel(h: Harness) -> None:
    kid = await h.create()
    h.backend.fail_next("create", BackendError("engine down", status=500))
    with pytest.raises(BackendError):
        await h.lc.restart(kid)
    assert terminated(h, kid)["reason"] == R.FAILED_TO_CREATE
    h.assert_released(kid)


async def test_restart_needs_a_running_kernel(h: Harness) -> None:
    h.runners.mode = "gate"
    kid = new_id()
    task = asyncio.ensure_future(h.lc.create(kernel_config(image=PY_IMAGE), kid, "s"))
    while not h.runners.made:
        await asyncio.sleep(0.01)
    with pytest.raises(KernelStateError):
        await h.lc.restart(kid)
    h.runners.gate.set()
    await task
    with pytest.raises(KernelNotFound):
        await h.lc.restart(new_id())


async def test_kernels_are_created_concurrently_with_distinct_ports(h: Harness) -> None:
    kids = [new_id() for _ in range(4)]
    await asyncio.gather(*(h.lc.create(kernel_config(), k, "s") for k in kids))
    ports = [p for k in kids for p in h.registry.get(k).host_ports["web"]]
    assert len(set(ports)) == 4
    await asyncio.gather(*(h.lc.destroy(k) for k in kids))
    for k in kids:
        h.assert_released(k)


async def test_tls_service_is_published_on_loopback_behind_a_proxy_route(tmp_path: Path) -> None:
    proxy = FakeTLSProxy()
    h = await build(tmp_path, tls_proxy=proxy)
    try:
        kid = await h.create(preopen_ports=[8081])
        kernel = h.registry.get(kid)
        [public] = kernel.host_ports["web"]
        loopback = kernel.tls_ports[8080]
        assert proxy.routes == {f"{kid}/8080": ("127.0.0.1", public, "127.0.0.1", loopback)}
        bindings = h.backend.containers[h.container_id(kid)].config["HostConfig"]["PortBindings"]
        assert bindings["8080/tcp"] == [{"HostIp": "127.0.0.1", "HostPort": str(loopback)}]
        assert bindings["8081/tcp"][0]["HostPort"] == str(kernel.host_ports["8081"][0])
        await h.lc.destroy(kid)
        assert proxy.routes == {}
        h.assert_released(kid)  # the loopback port went back to the pool too
    finally:
        await h.lc.close()
