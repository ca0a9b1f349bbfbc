"""The warm pool's pure decisions: which specs a pool container can become, what changes live,
how the pool refills, what a restart adopts."""

from __future__ import annotations

import copy
from typing import Any

import pytest

from berth.kernel.spec import parse_kernel_spec
from berth.kernel.warmplan import (
    WARM_RUNNER_FLAG,
    MissReason,
    PoolContainer,
    config_miss,
    live_update,
    plan_adoption,
    plan_refill,
    spec_miss,
)

R = MissReason


def spec(**extra: Any) -> Any:
    raw = {"image": {"canonical": "berth/python:3.11", "is_local": True},
           "resource_slots": {"cpu": "1", "mem": "256m"}, **extra}
    return parse_kernel_spec(raw, kernel_id="k1", session_id="s1")


@pytest.mark.parametrize(("extra", "reason"), [
    ({}, None),
    ({"environ": {"A": "1"}}, None),  # env is delivered by the claim
    ({"uid": 9001, "main_gid": 9001}, None),  # the default user, spelled out
    ({"bootstrap_script": "echo hi"}, R.BOOTSTRAP),
    ({"mounts": [{"name": "data", "host_path": "/srv/data", "kernel_path": "/home/work/data",
                  "permission": "ro"}]}, R.MOUNTS),
    ({"resource_opts": {"shmem": "1g"}}, R.SHM),
    ({"preopen_ports": [8080]}, R.PORTS),
    ({"cluster_role": "sub"}, R.PORTS),
    ({"uid": 2000}, R.USER),
    ({"main_gid": 2000}, R.USER),
    ({"supplementary_gids": [100]}, R.USER),
    ({"cluster_hostname": "worker"}, R.HOSTNAME),
    ({"resource_opts": {"io_read_bps": 1000}}, R.BLKIO),
])
def test_spec_miss_names_what_a_pool_container_cannot_become(extra: dict[str, Any],
                                                              reason: MissReason | None) -> None:
    assert spec_miss(spec(**extra), default_uid=9001, default_gid=9001) == reason


def test_spec_miss_cluster_network() -> None:
    s = spec(cluster_info={"network_config": {"mode": "bridge", "network_name": "n1"}})
    if s.cluster_info.network_name:
        assert spec_miss(s, default_uid=9001, default_gid=9001) == R.NETWORK


def pool_config() -> dict[str, Any]:
    return {
        "Image": "berth/python:3.11",
        "Cmd": ["/usr/bin/python3", "-u", "/opt/berth/runner/krunner.py", WARM_RUNNER_FLAG],
        "Env": ["BACKENDAI_KERNEL_ID=w1", "LANG=C.UTF-8"],
        "User": "9001:9001",
        "Hostname": "main1",
        "Labels": {"ai.backend.owner": "a1", "ai.backend.agent-id": "a1",
                   "berth.warm-pool": "berth/python:3.11", "berth.warm-pool.id": "w1",
                   "ai.backend.service-ports": "jupyter:http:8080"},
        "ExposedPorts": {"8080/tcp": {}},
        "HostConfig": {
            "Init": True, "PidsLimit": 4096, "CpuPeriod": 100000, "CpuQuota": 25000,
            "Memory": 128 * 2**20, "MemorySwap": 128 * 2**20,
            "PortBindings": {"8080/tcp": [{"HostIp": "127.0.0.1", "HostPort": "30001"}]},
            "Mounts": [{"Type": "bind", "Source": "/s/.warm-pool/w1/config",
                        "Target": "/home/config", "ReadOnly": True},
                       {"Type": "bind", "Source": "/opt/runner", "Target": "/opt/berth/runner"}],
        },
    }


def kernel_config() -> dict[str, Any]:
    config = copy.deepcopy(pool_config())
    config["Cmd"] = config["Cmd"][:-1]
    config["Env"] = ["BACKENDAI_KERNEL_ID=k1", "LANG=C.UTF-8", "X=1"]
    config["Labels"] = {"ai.backend.owner": "a1", "ai.backend.agent-id": "a1",
                        "ai.backend.kernel-id": "k1", "ai.backend.session-id": "s1",
                        "ai.backend.owner-user-id": "u", "ai.backend.owner-project-id": "p",
                        "ai.backend.service-ports": "jupyter:http:8080"}
    host = config["HostConfig"]
    host.update({"CpusetCpus": "1", "CpuQuota": 100000, "Memory": 256 * 2**20,
                 "MemorySwap": 256 * 2**20})
    host["Mounts"][0]["Source"] = "/s/k1/config"
    return config


def miss(kernel: dict[str, Any]) -> tuple[MissReason, str] | None:
    return config_miss(pool_config(), kernel, pool_dir="/s/.warm-pool/w1", kernel_dir="/s/k1")


def test_a_kernel_differing_only_in_env_identity_and_live_limits_is_served() -> None:
    assert miss(kernel_config()) is None
    assert live_update(kernel_config()) == {
        "CpuPeriod": 100000, "CpuQuota": 100000, "CpusetCpus": "1", "Memory": 256 * 2**20,
        "MemorySwap": 256 * 2**20, "PidsLimit": 4096}


@pytest.mark.parametrize(("change", "reason", "key"), [
    (lambda c: c["HostConfig"].update(ShmSize=2**30), R.SHM, "HostConfig.ShmSize"),
    (lambda c: c["HostConfig"].update(Devices=[{"PathOnHost": "/dev/nvidia0"}]), R.DEVICES,
     "HostConfig.Devices"),
    (lambda c: c["HostConfig"]["Mounts"].append({"Source": "/data", "Target": "/home/work/d"}),
     R.MOUNTS, "HostConfig.Mounts"),
    (lambda c: c["HostConfig"]["PortBindings"]["8080/tcp"][0].update(HostPort="30002"),
     R.PORTS, "HostConfig.PortBindings"),
    (lambda c: c.update(User="2000:2000"), R.USER, "User"),
    (lambda c: c.update(Image="berth/python:3.12"), R.IMAGE_CHANGED, "Image"),
    (lambda c: c["Cmd"].extend(["--bootstrap", "/home/work/bootstrap.sh"]), R.CONFIG, "Cmd"),
    (lambda c: c["HostConfig"].update(NetworkMode="n1"), R.NETWORK, "HostConfig.NetworkMode"),
    (lambda c: c["Labels"].update({"ai.backend.service-ports": ""}), R.CONFIG, "Labels"),
    (lambda c: c["HostConfig"].pop("Memory"), R.CONFIG, "HostConfig.Memory"),
])
def test_any_other_difference_is_a_miss_with_its_reason(change: Any, reason: MissReason,
                                                         key: str) -> None:
    kernel = kernel_config()
    change(kernel)
    assert miss(kernel) == (reason, key)


def test_mounts_outside_the_pool_dir_are_not_rebased() -> None:
    kernel = kernel_config()
    kernel["HostConfig"]["Mounts"][1]["Source"] = "/s/k1/opt-runner"
    assert miss(kernel) == (R.MOUNTS, "HostConfig.Mounts")


def test_refill_fills_each_image_up_to_its_size_within_max_total_emptiest_first() -> None:
    assert plan_refill({"a": 2, "b": 2}, 4, {}) == {"a": 2, "b": 2}
    assert plan_refill({"a": 2, "b": 2}, 3, {"a": 1}) == {"b": 1, "a": 1}
    assert plan_refill({"a": 3, "b": 1}, 2, {}) == {"a": 1, "b": 1}
    assert plan_refill({"a": 2}, 4, {"a": 2}) == {}
    assert plan_refill({"a": 2}, 1, {"x": 1}) == {}  # unconfigured members still count
    assert plan_refill({"a": 0}, 4, {}) == {}


def pc(cid: str, image: str = "a", *, running: bool = True, record: bool = True,
       member: str | None = None) -> PoolContainer:
    return PoolContainer(cid, member or f"w{cid}", image, running, record)


def test_adoption_keeps_what_is_configured_reaps_the_rest_and_never_touches_claimed() -> None:
    containers = [pc("1"), pc("2"), pc("3"), pc("4", "gone"), pc("5", running=False),
                  pc("6", record=False), pc("7")]
    plan = plan_adoption(containers, claimed={"7"}, wanted={"a": 2}, max_total=4,
                         scratch_ids={"w1", "w2", "w3", "w4", "w5", "w6", "w7", "wx"})
    assert plan.adopt == ("1", "2")
    assert plan.reap == ("3", "4", "5", "6")  # 3: over its size; 4: image no longer pooled
    assert "7" not in plan.reap and "w7" in plan.reap_scratch  # claimed: the kernel's
    assert set(plan.reap_scratch) == {"w3", "w4", "w5", "w6", "w7", "wx"}


def test_adoption_needs_the_member_scratch_and_respects_max_total() -> None:
    plan = plan_adoption([pc("1"), pc("2")], claimed=set(), wanted={"a": 5}, max_total=1,
                         scratch_ids={"w2"})
    assert plan.adopt == ("2",)
    assert plan.reap == ("1",)
