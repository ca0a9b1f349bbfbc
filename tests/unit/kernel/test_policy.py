"""What a kernel spec may ask for: the uid/gid policy and the environ deny-list (pure)."""

from __future__ import annotations

from typing import Any

import pytest

from berth.config import MAX_ID, load_config
from berth.errors import (
    ConfigError,
    EnvironRefused,
    IdentityRefused,
    InvalidArgument,
    InvalidKernelSpec,
)
from berth.kernel.policy import KernelPolicy, check_kernel_spec, denied_pattern
from berth.kernel.spec import KernelSpec, parse_kernel_spec
from berth.rpc.failure import describe, rebuild


def spec(**extra: Any) -> KernelSpec:
    return parse_kernel_spec({"image": {"canonical": "berth/busybox:latest"},
                              "resource_slots": {"cpu": "1", "mem": "64m"}, **extra},
                             kernel_id="k1", session_id="s1")


def policy(**container: Any) -> KernelPolicy:
    config = load_config(env={}, overrides={"agent.rpc-allow-plain": True,
                                            **{f"container.{k}": v for k, v in container.items()}})
    return KernelPolicy.from_config(config.container)


def refusal(s: KernelSpec, p: KernelPolicy) -> InvalidKernelSpec:
    with pytest.raises(InvalidKernelSpec) as info:
        check_kernel_spec(s, p)
    return info.value


# ------------------------------------------------------------------ uid / gid
@pytest.mark.parametrize(("extra", "field", "value"), [
    ({"uid": 0}, "uid", 0),
    ({"uid": 1000, "main_gid": 0}, "main_gid", 0),
    ({"uid": 1000, "main_gid": 1000, "supplementary_gids": [1001, 0]}, "supplementary_gids", 0),
])
def test_root_identity_is_refused_by_default(extra: dict[str, Any], field: str,
                                             value: int) -> None:
    for p in (KernelPolicy(), policy()):  # the dataclass default and the config default agree
        err = refusal(spec(**extra), p)
        assert isinstance(err, IdentityRefused) and isinstance(err, InvalidArgument)
        assert (err.field, err.value) == (field, value)
        assert field in str(err) and "kernel-" in err.allowed


def test_ordinary_identity_and_no_identity_pass_by_default() -> None:
    check_kernel_spec(spec(uid=1000, main_gid=1000, supplementary_gids=[100, 1001]), policy())
    check_kernel_spec(spec(), policy())  # the configured kernel-uid/gid apply, not checked


def test_config_can_allow_root_explicitly() -> None:
    p = policy(**{"kernel-uid-range": [0, 65535], "kernel-gid-range": [0, 65535]})
    check_kernel_spec(spec(uid=0, main_gid=0, supplementary_gids=[0]), p)
    assert (p.uid_range, p.gid_range) == ((0, 65535), (0, 65535))


def test_ranges_bound_both_ends() -> None:
    p = policy(**{"kernel-uid-range": [2000, 2999], "kernel-gid-range": [3000, 3999]})
    check_kernel_spec(spec(uid=2000, main_gid=3999), p)
    assert refusal(spec(uid=3000), p).field == "uid"
    assert refusal(spec(uid=1999), p).field == "uid"
    err = refusal(spec(uid=2500, main_gid=4000), p)
    assert err.field == "main_gid" and err.allowed == "container.kernel-gid-range [3000, 3999]"
    assert refusal(spec(supplementary_gids=[2999]), p).field == "supplementary_gids"


def test_allowed_supplementary_gids_is_an_exact_allow_list() -> None:
    p = policy(**{"allowed-supplementary-gids": [44, 0]})
    check_kernel_spec(spec(supplementary_gids=[44, 0]), p)  # listed: even 0 is fine
    err = refusal(spec(supplementary_gids=[44, 45]), p)
    assert isinstance(err, IdentityRefused) and err.value == 45
    assert "[0, 44]" in err.allowed
    nothing = policy(**{"allowed-supplementary-gids": []})
    check_kernel_spec(spec(), nothing)
    assert refusal(spec(supplementary_gids=[1000]), nothing).field == "supplementary_gids"


@pytest.mark.parametrize(("key", "value"), [
    ("kernel-uid-range", [10, 5]),
    ("kernel-uid-range", [-1, 5]),
    ("kernel-gid-range", [0, MAX_ID + 1]),
    ("allowed-supplementary-gids", [-3]),
    ("environ-deny-list", ["LD_*", ""]),
    ("environ-deny-list", ["A=B"]),
])
def test_bad_policy_config_names_its_key(key: str, value: Any) -> None:
    with pytest.raises(ConfigError) as info:
        policy(**{key: value})
    assert info.value.key_path.startswith(f"container.{key}")


def test_spec_ids_beyond_what_linux_accepts_are_invalid() -> None:
    with pytest.raises(InvalidKernelSpec) as info:
        spec(uid=MAX_ID + 1)
    assert info.value.field == "uid"
    with pytest.raises(InvalidKernelSpec):
        spec(supplementary_gids=[-1])


# ------------------------------------------------------------------ environ
@pytest.mark.parametrize(("name", "pattern"), [
    ("LD_PRELOAD", "LD_*"), ("LD_AUDIT", "LD_*"), ("LD_LIBRARY_PATH", "LD_*"),
    ("GLIBC_TUNABLES", "GLIBC_TUNABLES"), ("GCONV_PATH", "GCONV_PATH"),
    ("NVIDIA_VISIBLE_DEVICES", "NVIDIA_*"), ("NVIDIA_DRIVER_CAPABILITIES", "NVIDIA_*"),
    ("AMD_VISIBLE_DEVICES", "AMD_VISIBLE_DEVICES"),
])
def test_default_deny_list_refuses_loader_and_runtime_variables(name: str, pattern: str) -> None:
    err = refusal(spec(environ={"OK": "1", name: "x"}), policy())
    assert isinstance(err, EnvironRefused)
    assert (err.variable, err.pattern, err.field) == (name, pattern, f"environ.{name}")
    assert name in str(err)


@pytest.mark.parametrize("name", ["PATH", "LANG", "MY_LD_PRELOAD", "ld_preload", "CUDA_HOME",
                                  "BACKENDAI_KERNEL_ID", "CUDA_VISIBLE_DEVICES", "OMP_NUM_THREADS"])
def test_other_variables_pass_the_default_deny_list(name: str) -> None:
    # Agent- and plugin-set names are not refused: the agent's value wins (container_config).
    check_kernel_spec(spec(environ={name: "x"}), policy())


def test_deny_list_is_configurable_with_patterns() -> None:
    p = policy(**{"environ-deny-list": ["CUDA_VISIBLE_DEVICES", "*_VISIBLE_DEVICES", "HTTP?_PROXY"]})
    assert refusal(spec(environ={"HIP_VISIBLE_DEVICES": "0"}), p).data["pattern"] == (
        "*_VISIBLE_DEVICES")
    assert refusal(spec(environ={"CUDA_VISIBLE_DEVICES": "0"}), p).data["pattern"] == (
        "CUDA_VISIBLE_DEVICES")
    assert refusal(spec(environ={"HTTPS_PROXY": "x"}), p).data["variable"] == "HTTPS_PROXY"
    check_kernel_spec(spec(environ={"LD_PRELOAD": "/x.so"}), p)  # the operator's list replaces
    check_kernel_spec(spec(environ={"LD_PRELOAD": "/x.so"}), policy(**{"environ-deny-list": []}))
    assert denied_pattern("LD_PRELOAD", ["X", "LD_*"]) == "LD_*"
    assert denied_pattern("LD_PRELOAD", ["ld_*"]) is None  # case-sensitive, as the loader is


@pytest.mark.parametrize("environ", [
    {"LD_PRELOAD=/evil.so": ""},  # "=" in a name would become a second variable in Docker's Env
    {" LD_PRELOAD": "/evil.so"}, {"A B": "1"}, {"": "1"}, {"X\nLD_PRELOAD": "1"},
    {"OK": "1\nLD_PRELOAD=/evil.so"},  # environ.txt is one variable per line
    {"OK": "a\x00b"}, {"OK": "a\rb"},
])
def test_environ_that_could_smuggle_a_variable_is_invalid(environ: dict[str, str]) -> None:
    with pytest.raises(InvalidKernelSpec) as info:
        spec(environ=environ)
    assert info.value.field.startswith("environ")


def test_refusals_travel_as_typed_errors_with_their_data() -> None:
    for exc in (EnvironRefused("LD_PRELOAD", pattern="LD_*"),
                IdentityRefused("uid", 0, allowed="container.kernel-uid-range [1, 9]")):
        name, representation, tb = describe(exc)
        back = rebuild(name, representation, tb)
        assert type(back) is type(exc) and back.data == exc.data and str(back) == str(exc)
    assert rebuild(*describe(EnvironRefused("LD_PRELOAD", pattern="LD_*"))).data[
        "variable"] == "LD_PRELOAD"


def test_plugins_declare_the_variables_they_own() -> None:
    from berth.plugins.cpu import CPUPlugin
    from berth.plugins.cuda import CUDAPlugin
    from berth.plugins.mock import MockPlugin
    from berth.plugins.rocm import ROCmPlugin
    from berth.resources.plugin import plugin_env_names

    names = plugin_env_names([CPUPlugin, CUDAPlugin, ROCmPlugin, MockPlugin])
    assert {"CUDA_VISIBLE_DEVICES", "HIP_VISIBLE_DEVICES", "ROCR_VISIBLE_DEVICES",
            "MOCK_VISIBLE_DEVICES", "BERTH_MOCK_DEVICES"} <= names
    p = KernelPolicy.from_config(load_config(env={}, overrides={
        "agent.rpc-allow-plain": True}).container, owned_environ=names)
    assert p.owned_environ == names
    check_kernel_spec(spec(environ={"CUDA_VISIBLE_DEVICES": "0"}), p)  # dropped, not refused
