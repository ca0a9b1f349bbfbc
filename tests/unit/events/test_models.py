from __future__ import annotations

import json

import pytest
from pydantic import ValidationError

from berth.events import (
    ALL_EVENTS,
    AgentHeartbeatEvent,
    AgentInfo,
    BgtaskUpdatedEvent,
    KernelCreationInfo,
    KernelStartedEvent,
    KernelTerminatedEvent,
    SlotQuantity,
    parse_event,
)
from berth.types import TerminationReason


def info() -> AgentInfo:
    return AgentInfo(
        ip="10.0.0.1", region="local", scaling_group="default", addr="tcp://10.0.0.1:6011",
        public_key=None, public_host="10.0.0.1",
        available_resource_slots=[SlotQuantity(resource_type="cpu", quantity="4")],
        slot_key_and_units={"cpu": "count", "mem": "bytes"}, version="0.1.0",
        compute_plugins={"cpu": {"version": "1"}}, architecture="x86_64",
    )


def test_every_event_has_unique_backend_ai_name() -> None:
    names = [cls.name for cls in ALL_EVENTS]
    assert len(set(names)) == len(names)
    assert {"agent_started", "agent_heartbeat", "kernel_started", "kernel_terminated",
            "image_pull_failed", "bgtask_done", "bgtask_partial_success",
            "execution_timeout", "session_failure"} <= set(names)


def test_kernel_terminated_payload_uses_reason_value_and_default_exit_code() -> None:
    ev = KernelTerminatedEvent(kernel_id="k1", session_id="s1",
                               reason=TerminationReason.OOM_KILLED)
    assert json.loads(ev.payload_json()) == {
        "kernel_id": "k1", "session_id": "s1", "reason": "self-terminated",
        "cause": "oom-killed", "exit_code": -1}
    assert ev.anycast and ev.broadcast


def test_unknown_reason_is_rejected() -> None:
    with pytest.raises(ValidationError):
        KernelTerminatedEvent(kernel_id="k", session_id="s", reason="nonsense")  # type: ignore[arg-type]


def test_kernel_started_creation_info_round_trips() -> None:
    ci = KernelCreationInfo.model_validate({
        "container_id": "c", "kernel_host": "127.0.0.1", "repl_in_port": 0, "repl_out_port": 0,
        "service_ports": [{"name": "jupyter", "protocol": "http", "container_ports": [8080],
                           "host_ports": [30001]}],
        "used_devices": {"units": {"cuda": {"0": {"used": {"cuda.shares": "0.5"}}}}}})
    ev = KernelStartedEvent(kernel_id="k", session_id="s", creation_info=ci)
    back = parse_event("kernel_started", ev.payload_json())
    assert back == ev
    wire = ev.payload()["creation_info"]
    assert wire["service_ports"][0]["host_ports"] == [30001]
    assert wire["service_ports"][0]["is_inference"] is False
    assert wire["used_devices"] == {"units": {"cuda": {"0": {
        "model_name": None, "used": {"cuda.shares": "0.5"}, "processing_units": None,
        "memory_size": None}}}}


def test_creation_info_requires_what_the_manager_requires() -> None:
    with pytest.raises(ValidationError):
        KernelCreationInfo.model_validate({"container_id": "c", "kernel_host": "h",
                                           "service_ports": [], "used_devices": {}})


def test_heartbeat_carries_agent_info_fields() -> None:
    p = AgentHeartbeatEvent(agent_info=info()).payload()["agent_info"]
    assert p["addr"] == "tcp://10.0.0.1:6011"
    assert p["available_resource_slots"] == [{"resource_type": "cpu", "quantity": "4"}]
    assert p["public_key"] is None
    assert AgentHeartbeatEvent.anycast and not AgentHeartbeatEvent.broadcast


def test_bgtask_events_are_broadcast_and_cached() -> None:
    ev = BgtaskUpdatedEvent(task_id="t1", current_progress=1, total_progress=2)
    assert ev.broadcast and not ev.anycast
    assert ev.cache_key() == "bgtask.t1"
