"""build_container_config: a pure function from a ContainerPlan to Docker's create body."""

from __future__ import annotations

from typing import Any

import pytest

from berth.errors import InvalidKernelSpec, PluginError
from berth.kernel.container_config import (
    ContainerPlan,
    agent_environ,
    build_container_config,
    container_name,
    has_runner,
    idle_command,
    kernel_environ,
    overridden_environ,
    runner_command,
)
from berth.kernel.spec import parse_kernel_spec
from berth.resources import Override
from berth.runner import CONTAINER_RUNNER_DIR, CONTAINER_SOCKET
from berth.types import AGENT_ID_LABEL, KERNEL_ID_LABEL, OWNER_LABEL, SESSION_ID_LABEL

PLUGIN_ARGS = {
    "HostConfig": {"CpuQuota": 150_000, "CpuPeriod": 100_000, "CpusetCpus": "0,1",
                   "Memory": 256 << 20, "MemorySwap": 256 << 20},
    "Env": {"FROM_PLUGIN": "plugin", "SHARED": "plugin", "OMP_NUM_THREADS": "9"},
}


def plan(**spec_extra: Any) -> ContainerPlan:
    overrides = spec_extra.pop("plan", {})
    spec = parse_kernel_spec({
        "image": {"canonical": "berth/python:3.11"},
        "resource_slots": {"cpu": "1.5", "mem": "256m"},
        **spec_extra,
    }, kernel_id="k1", session_id="s1")
    values: dict[str, Any] = {
        "agent_id": "ag", "kernel_id": "k1", "session_id": "s1", "spec": spec,
        "image_ref": "berth/python:3.11",
        "image_labels": {"ai.backend.service-ports": "web:http:8080",
                         "ai.backend.envs.corecount": "OMP_NUM_THREADS,NPROC"},
        "uid": 1100, "gid": 1200, "resource_args": PLUGIN_ARGS,
        "mounts": [{"Type": "bind", "Source": "/s/k1/work", "Target": "/home/work"}],
        "port_map": {8080: 30001, 8081: 30002}, "bind_host": "10.0.0.5", "pids_limit": 512,
        "nofile_limit": 4096, "service_ports_label": "web:http:8080,8081:preopen:8081",
        "extra_env": {"SHARED": "extra", "FROM_EXTRA": "extra"},
    }
    values.update(overrides)
    return ContainerPlan(**values)


def env_of(config: dict[str, Any]) -> dict[str, str]:
    return dict(item.split("=", 1) for item in config["Env"])


def test_limits_and_plugin_args_reach_host_config() -> None:
    config = build_container_config(plan(resource_opts={"shmem": "64m"}), ["true"])
    host = config["HostConfig"]
    assert host["Init"] is True and host["Privileged"] is False
    assert host["PidsLimit"] == 512
    assert host["Ulimits"] == [{"Name": "nofile", "Soft": 4096, "Hard": 4096}]
    assert host["ShmSize"] == 64 << 20
    assert (host["CpuQuota"], host["CpuPeriod"], host["CpusetCpus"]) == (150_000, 100_000, "0,1")
    assert host["Memory"] == host["MemorySwap"] == 256 << 20  # swap off
    assert host["Mounts"] == [{"Type": "bind", "Source": "/s/k1/work", "Target": "/home/work"}]
    assert host["PublishAllPorts"] is False


def test_no_shm_size_unless_asked() -> None:
    assert "ShmSize" not in build_container_config(plan(), ["true"])["HostConfig"]


def test_plugin_host_config_merges_into_nested_keys() -> None:
    args = {"HostConfig": {"LogConfig": {"Config": {"max-size": Override("1m"),
                                                    "compress": "true"}}}}
    host = build_container_config(plan(plan={"resource_args": args}), ["x"])["HostConfig"]
    assert host["LogConfig"] == {"Type": "json-file",
                                 "Config": {"max-size": "1m", "max-file": "2",
                                            "compress": "true"}}


def test_plugin_host_config_may_not_silently_change_the_builders_value() -> None:
    args = {"HostConfig": {"LogConfig": {"Config": {"max-size": "1m"}}}}
    with pytest.raises(PluginError, match="LogConfig.Config.max-size"):
        build_container_config(plan(plan={"resource_args": args}), ["x"])


def test_plugin_lists_add_to_the_builders_lists() -> None:
    args = {"HostConfig": {"GroupAdd": ["video"]}}
    host = build_container_config(plan(supplementary_gids=[1001], plan={"resource_args": args}),
                                  ["x"])["HostConfig"]
    assert host["GroupAdd"] == ["1001", "video"]  # the spec's groups are kept


def test_labels_name_owner_kernel_session_and_services() -> None:
    labels = build_container_config(plan(owner_user_id="u1", owner_project_id="p1"),
                                    ["x"])["Labels"]
    assert labels[OWNER_LABEL] == labels[AGENT_ID_LABEL] == "ag"
    assert (labels[KERNEL_ID_LABEL], labels[SESSION_ID_LABEL]) == ("k1", "s1")
    assert labels["ai.backend.service-ports"] == "web:http:8080,8081:preopen:8081"
    assert (labels["ai.backend.owner-user-id"], labels["ai.backend.owner-project-id"]) == (
        "u1", "p1")
    assert container_name("k1") == "berth-kernel.k1"


def test_env_precedence_agent_and_plugin_values_win_over_spec_environ() -> None:
    spec_env = {"SHARED": "spec", "HOME": "/elsewhere", "OMP_NUM_THREADS": "7",
                "FROM_PLUGIN": "spec", "BACKENDAI_KERNEL_ID": "evil",
                "BACKENDAI_SESSION_ID": "evil", "LOCAL_USER_ID": "0", "LOCAL_GROUP_ID": "0",
                "MY_OWN": "mine", "LANG": "ko_KR.UTF-8", "PATH": "/opt/mine/bin:/usr/bin"}
    p = plan(environ=spec_env)
    env = env_of(build_container_config(p, ["x"]))
    assert env["SHARED"] == "extra"  # extra env > plugin env > spec environ
    assert env["FROM_PLUGIN"] == "plugin" and env["FROM_EXTRA"] == "extra"
    assert env["HOME"] == "/home/work" and env["OMP_NUM_THREADS"] == "2"  # ceil(1.5 cpu)
    assert (env["BACKENDAI_KERNEL_ID"], env["BACKENDAI_SESSION_ID"]) == ("k1", "s1")
    assert (env["LOCAL_USER_ID"], env["LOCAL_GROUP_ID"]) == ("1100", "1200")
    # the spec's own variables, the LANG default and PATH (the runner uses absolute paths)
    assert (env["MY_OWN"], env["LANG"]) == ("mine", "ko_KR.UTF-8")
    assert env["PATH"] == "/opt/mine/bin:/usr/bin"
    assert kernel_environ(p) == env
    assert overridden_environ(p) == sorted([
        "SHARED", "HOME", "OMP_NUM_THREADS", "FROM_PLUGIN", "BACKENDAI_KERNEL_ID",
        "BACKENDAI_SESSION_ID", "LOCAL_USER_ID", "LOCAL_GROUP_ID"])


def test_spec_repeating_the_agents_value_is_not_reported_as_overridden() -> None:
    # The Manager sends BACKENDAI_KERNEL_ID itself, with the same value: nothing to warn about.
    p = plan(environ={"BACKENDAI_KERNEL_ID": "k1", "BACKENDAI_SESSION_ID": "s1"})
    assert overridden_environ(p) == []
    assert agent_environ(p)["BACKENDAI_KERNEL_ID"] == "k1"


def test_plugin_owned_variables_are_dropped_from_the_spec_even_without_a_device() -> None:
    # A kernel the mock plugin gave nothing: the spec may still not choose its devices.
    no_device = {"HostConfig": {}, "Env": {}}
    p = plan(environ={"MOCK_VISIBLE_DEVICES": "mock0,mock1", "CUDA_VISIBLE_DEVICES": "0",
                      "MY_OWN": "x"},
             plan={"resource_args": no_device,
                   "owned_env": frozenset({"MOCK_VISIBLE_DEVICES", "BERTH_MOCK_DEVICES"})})
    env = kernel_environ(p)
    assert "MOCK_VISIBLE_DEVICES" not in env and env["MY_OWN"] == "x"
    assert env["CUDA_VISIBLE_DEVICES"] == "0"  # no loaded plugin owns it here
    assert overridden_environ(p) == ["MOCK_VISIBLE_DEVICES"]
    with_device = plan(environ={"MOCK_VISIBLE_DEVICES": "mock0,mock1"},
                       plan={"resource_args": {"Env": {"MOCK_VISIBLE_DEVICES": "mock1"}},
                             "owned_env": frozenset({"MOCK_VISIBLE_DEVICES"})})
    assert kernel_environ(with_device)["MOCK_VISIBLE_DEVICES"] == "mock1"


def test_env_base_values_and_layering_without_spec_environ() -> None:
    env = env_of(build_container_config(plan(preopen_ports=[8081], cluster_role="sub",
                                             cluster_idx=2), ["x"]))
    assert env["SHARED"] == "extra"  # extra env > plugin env
    assert env["NPROC"] == env["OMP_NUM_THREADS"] == "2"  # corecount label: ceil(1.5 cpu)
    assert (env["BACKENDAI_KERNEL_ID"], env["BACKENDAI_SESSION_ID"]) == ("k1", "s1")
    assert env["BACKENDAI_PREOPEN_PORTS"] == "8081"
    assert env["BACKENDAI_SERVICE_PORTS"] == "web:http:8080"
    assert env["BACKENDAI_CLUSTER_HOST"] == "sub2"
    assert (env["LOCAL_USER_ID"], env["LOCAL_GROUP_ID"]) == ("1100", "1200")
    assert env["HOME"] == "/home/work" and env["LANG"] == "C.UTF-8"


def test_ports_are_published_on_bind_host_only() -> None:
    config = build_container_config(plan(), ["x"])
    assert config["ExposedPorts"] == {"8080/tcp": {}, "8081/tcp": {}}
    assert config["HostConfig"]["PortBindings"] == {
        "8080/tcp": [{"HostIp": "10.0.0.5", "HostPort": "30001"}],
        "8081/tcp": [{"HostIp": "10.0.0.5", "HostPort": "30002"}],
    }


def test_user_group_hostname_and_workdir() -> None:
    config = build_container_config(plan(supplementary_gids=[44, 45],
                                         cluster_hostname="node-a"), ["x"])
    assert config["User"] == "1100:1200"
    assert config["HostConfig"]["GroupAdd"] == ["44", "45"]
    assert config["Hostname"] == "node-a" and config["WorkingDir"] == "/home/work"
    assert config["Image"] == "berth/python:3.11" and config["Entrypoint"] == []
    assert config["StopSignal"] == "SIGTERM"


@pytest.mark.parametrize(("labels", "expected"), [
    ({"ai.backend.runtime-type": "python"}, True),
    ({"ai.backend.runtime-type": "app", "ai.backend.runtime-path": "/usr/bin/python3.11"}, True),
    ({"ai.backend.runtime-type": "app"}, False),
    ({}, False),
])
def test_has_runner(labels: dict[str, str], expected: bool) -> None:
    assert has_runner(labels) is expected


def test_runner_command_uses_the_image_python_and_the_mounted_runner() -> None:
    labels = {"ai.backend.runtime-type": "python", "ai.backend.runtime-path": "/opt/py/bin/python"}
    cmd = runner_command(labels, bootstrap=False)
    assert cmd[0] == "/opt/py/bin/python" and f"{CONTAINER_RUNNER_DIR}/krunner.py" in cmd
    assert cmd[cmd.index("--socket") + 1] == CONTAINER_SOCKET and "--bootstrap" not in cmd
    with_boot = runner_command({"ai.backend.runtime-type": "python"}, bootstrap=True)
    assert with_boot[0] == "/usr/bin/python3"
    assert with_boot[with_boot.index("--bootstrap") + 1] == "/home/work/bootstrap.sh"
    config = build_container_config(plan(), cmd)
    assert config["Cmd"] == cmd


def test_idle_command_waits_for_sigterm_and_runs_the_bootstrap() -> None:
    plain = idle_command(bootstrap=False)
    assert plain[:2] == ["/bin/sh", "-c"]
    assert "trap 'exit 0' TERM" in plain[2] and "bootstrap" not in plain[2]
    boot = idle_command(bootstrap=True)[2]
    assert "sh /home/work/bootstrap.sh" in boot and "bootstrap.exit" in boot
    assert boot.index("bootstrap.sh") < boot.index("while")


@pytest.mark.parametrize("shmem", ["1e30", "-1", "lots", True, "99999999999999999999g"])
def test_a_shmem_the_engine_cannot_take_is_refused_with_the_spec(shmem: Any) -> None:
    raw = {"image": {"canonical": "berth/busybox:latest"},
           "resource_slots": {"cpu": "1", "mem": "1g"}, "resource_opts": {"shmem": shmem}}
    with pytest.raises(InvalidKernelSpec) as err:
        parse_kernel_spec(raw, kernel_id="k", session_id="s")
    assert err.value.data["field"] == "resource_opts"
