from __future__ import annotations

from pathlib import Path

import pytest

from berth.cli.config_sample import render_sample
from berth.config import load_config, parse_binary_size, parse_host_port
from berth.errors import ConfigError

SAMPLE = Path(__file__).parents[3] / "configs" / "agent.sample.toml"
PLAIN = {"agent.rpc-allow-plain": True}


def test_checked_in_sample_is_current_and_valid() -> None:
    assert SAMPLE.read_text() == render_sample(), "run: berth config sample -o configs/agent.sample.toml"
    config = load_config(SAMPLE, env={})
    assert config.agent.rpc_listen_addr == "0.0.0.0:6011"
    assert config.agent.internal_addr == "0.0.0.0:6003"
    assert config.container.port_range == (30000, 31000)
    assert config.container.port_reuse_cooldown_sec == 60
    assert config.agent.rpc_auth_agent_keypair == SAMPLE.parent / "keys/agent.key_secret"
    assert config.resource.cpu_overcommit_ratio == 1.0       # default: no overcommit
    assert "# Each core is promised to kernels this many times over" in SAMPLE.read_text()


@pytest.mark.parametrize(("overrides", "key_path"), [
    ({"container.port-range": [1, 2]}, "container.port-range"),
    ({"container.scratch-typo": 1}, "container.scratch-typo"),
    ({"container.scratch-type": "hostdir", "container.scratch-size": "1g"}, "container"),
    ({"container.scratch-type": "tape"}, "container.scratch-type"),
    ({"agent.kernel-creation-concurrency": 0}, "agent.kernel-creation-concurrency"),
    ({"agent.rpc-listen-addr": "nohost"}, "agent.rpc-listen-addr"),
    ({"resource.cpu-overcommit-ratio": 0.5}, "resource.cpu-overcommit-ratio"),
])
def test_errors_name_the_key_path(overrides: dict[str, object], key_path: str) -> None:
    with pytest.raises(ConfigError) as err:
        load_config(env={}, overrides={**PLAIN, **overrides})
    assert err.value.key_path == key_path


def test_keys_are_required_unless_plain_is_explicit() -> None:
    with pytest.raises(ConfigError, match="rpc-auth-agent-keypair"):
        load_config(env={}, overrides={})


def test_env_overrides_follow_backendai_names(tmp_path: Path) -> None:
    env = {"BACKEND_CONTAINER_PORT_RANGE": "31000-31100", "BACKEND_AGENT_PORT": "7011",
           "BACKEND_SCRATCH_ROOT": str(tmp_path), "BACKEND_BIND_HOST_OVERRIDE": "127.0.0.1"}
    config = load_config(env=env, overrides=PLAIN)
    assert config.container.port_range == (31000, 31100)
    assert config.agent.rpc_listen_addr == "0.0.0.0:7011"
    assert config.container.scratch_root == tmp_path
    assert config.container.bind_host == "127.0.0.1"


def test_file_paths_are_relative_to_the_file(tmp_path: Path) -> None:
    cfg = tmp_path / "agent.toml"
    cfg.write_text('[agent]\nrpc-allow-plain = true\n[container]\nscratch-root = "s"\n'
                   'scratch_type = "memory"\nscratch-size = "64m"\n')
    config = load_config(cfg, env={})
    assert config.container.scratch_root == tmp_path / "s"
    assert config.container.scratch_size == 64 * 2**20


def test_sizes_and_addresses() -> None:
    assert parse_binary_size("1G") == 2**30
    assert parse_binary_size("1.5k") == 1536
    assert parse_binary_size(7) == 7
    for bad in ("lots", "1e3", "inf", "-1k", "", True):
        with pytest.raises(ValueError):
            parse_binary_size(bad)  # type: ignore[arg-type]
    assert parse_host_port("[::1]:6011") == ("::1", 6011)
    assert parse_host_port("tcp://10.0.0.1:1") == ("10.0.0.1", 1)


@pytest.mark.parametrize(("key", "value", "message"), [
    ("redis.addr", "127.0.0.1:99999", "port out of range"),
    ("redis.addr", "a" * 70 + ":6379", "not a host name"),
    ("etcd.addr", "x" * 300, "not a host name"),
    ("agent.rpc-listen-addr", "0.0.0.0:70000", "port out of range"),
])
def test_an_address_nothing_can_connect_to_is_refused_at_load(
        key: str, value: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message) as err:
        load_config(env={}, overrides={"agent.rpc-allow-plain": True, key: value})
    assert err.value.key_path == key.replace("-", "_") or err.value.key_path == key


def test_addresses_may_leave_the_port_to_its_default() -> None:
    config = load_config(env={}, overrides={"agent.rpc-allow-plain": True,
                                            "redis.addr": "redis", "etcd.addr": "etcd-0"})
    assert config.redis is not None and config.redis.addr == "redis"
