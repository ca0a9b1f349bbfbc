"""etcd's global config as a standard Backend.AI install writes it never stops the agent."""

from __future__ import annotations

import logging

import pytest

from berth.config import AgentConfig
from berth.events.etcd import apply_etcd_overrides

STANDARD_REDIS = {
    "addr": "tcp://127.0.0.1:8110", "password": "secret", "sentinel": "", "service_name": "",
    "use_tls": "false", "tls_skip_verify": "false", "request_timeout": "30",
    "redis_helper_config": {"socket_timeout": "5.0", "socket_connect_timeout": "2.0",
                            "reconnect_poll_timeout": "0.3", "connection_ready_timeout": "5"},
    "override_configs": {"stream": {"addr": "127.0.0.1:8111"}},
}
LOCAL = {"agent": {"rpc-allow-plain": True}}


@pytest.mark.parametrize("local_redis", [None, {"db": 4}])
def test_a_standard_config_redis_is_taken_and_the_rest_logged(
        local_redis: dict[str, int] | None, caplog: pytest.LogCaptureFixture) -> None:
    local = {**LOCAL, "redis": local_redis}
    with caplog.at_level(logging.INFO, logger="berth.events.etcd"):
        merged = apply_etcd_overrides(local, {"redis": STANDARD_REDIS})
    config = AgentConfig.model_validate(merged)
    assert config.redis is not None
    assert (config.redis.addr, config.redis.password, config.redis.db) == (
        "127.0.0.1:8110", "secret", 4)
    assert "redis_helper_config" in caplog.text and "sentinel" in caplog.text


def test_without_redis_in_etcd_the_local_section_stands() -> None:
    merged = apply_etcd_overrides({**LOCAL, "redis": None}, {"redis": {}})
    assert AgentConfig.model_validate(merged).redis is None
