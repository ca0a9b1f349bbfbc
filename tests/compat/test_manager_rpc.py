"""The manager's own agent RPC client (Backend.AI 26.9.6) against a real Berth agent over
CurveZMQ: what the manager calls on every node — ping, health, gather_hwinfo, get_local_config
— must be answered in a shape the manager's own parsing accepts."""

from __future__ import annotations

from .conftest import CompatNode, RunInImage

# DeviceHwStatus in ai.backend.common.dto.agent.response
DEVICE_STATUSES = {"healthy", "degraded", "offline", "unavailable"}


def test_ping_through_rpc_context_and_client_pool(run_in_image: RunInImage) -> None:
    result = run_in_image("manager_ping.py")
    assert result == {"rpc_context": "pong", "pool": "ping"}


def test_gather_hwinfo_validates_as_gather_hwinfo_resp(run_in_image: RunInImage) -> None:
    result = run_in_image("manager_hwinfo.py")
    devices = result["devices"]
    names = [d["device_name"] for d in devices]
    assert {"cpu", "mem"} <= set(names), devices
    assert len(names) == len(set(names)), devices
    for device in devices:
        assert device["status"] in DEVICE_STATUSES, device
        assert all(isinstance(v, str) for v in device["metadata"].values()), device
    assert set(result["hardware_metadata"]) == set(names)


def test_health_validates_and_the_health_checker_says_healthy(
        run_in_image: RunInImage, compat_node: CompatNode) -> None:
    result = run_in_image("manager_health.py")
    health = result["health"]
    assert health["component"] == "agent"
    assert health["status"] in {"ok", "degraded"}
    assert isinstance(health["version"], str) and health["version"]
    assert isinstance(health["connectivity"]["overall_healthy"], bool)
    assert result["checker"] == {
        compat_node.agent.agent_id: {"is_healthy": True, "error": None}}


def test_get_local_config_has_the_agent_and_watcher_sections(run_in_image: RunInImage) -> None:
    result = run_in_image("manager_local_config.py")
    config = result["config"]
    assert isinstance(config, dict), result
    assert isinstance(config["agent"], dict) and isinstance(config["watcher"], dict), config


def test_a_manager_with_an_unknown_key_is_not_answered(run_in_image: RunInImage) -> None:
    refused = run_in_image("manager_wrong_key.py")
    assert refused["answered"] is False, refused
    assert refused["error"] in {"TimeoutError", "RPCError"}, refused
    # the agent still serves the manager it knows
    assert run_in_image("manager_ping.py")["rpc_context"] == "pong"
