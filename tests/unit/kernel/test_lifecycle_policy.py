"""The lifecycle enforces the kernel policy: refusals at create and restart, and the agent's env
over the spec's wherever the kernel's processes get an env (Docker's Env, environ.txt, exec)."""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Mapping, Sequence
from pathlib import Path

import pytest
from support.facade import facade_over

from berth.backend import ExecResult
from berth.backend.fake import FakeContainer
from berth.errors import EnvironRefused, IdentityRefused
from berth.kernel.policy import KernelPolicy
from berth.types import KernelState

from .harness import Harness, build, kernel_config, new_id

EVIL = {"BACKENDAI_KERNEL_ID": "evil", "BACKENDAI_SESSION_ID": "evil", "LOCAL_USER_ID": "0",
        "HOME": "/root", "MY_VAR": "mine"}


def container_env(h: Harness, kid: str) -> dict[str, str]:
    config = h.backend.containers[h.container_id(kid)].config
    return dict(item.split("=", 1) for item in config["Env"])


def environ_txt(h: Harness, kid: str) -> dict[str, str]:
    text = (h.lc.layouts[kid].config_dir / "environ.txt").read_text()
    return dict(line.split("=", 1) for line in text.splitlines())


async def test_deny_listed_variable_is_refused_before_anything_is_held(h: Harness) -> None:
    kid = new_id()
    with pytest.raises(EnvironRefused) as info:
        await h.lc.create(kernel_config(environ={"A": "1", "LD_PRELOAD": "/w/x.so"}), kid, "s")
    assert info.value.variable == "LD_PRELOAD" and info.value.field == "environ.LD_PRELOAD"
    assert h.sink.events == [] and h.backend.containers == {}
    h.assert_released(kid)


async def test_root_uid_is_refused_by_default(h: Harness) -> None:
    kid = new_id()
    with pytest.raises(IdentityRefused) as info:
        await h.lc.create(kernel_config(uid=0), kid, "s")
    assert (info.value.field, info.value.value) == ("uid", 0)
    with pytest.raises(IdentityRefused) as info:
        await h.lc.create(kernel_config(uid=1000, main_gid=1000, supplementary_gids=[0]), kid, "s")
    assert info.value.field == "supplementary_gids"
    assert h.sink.events == [] and h.backend.containers == {}
    h.assert_released(kid)


async def test_root_runs_when_the_policy_allows_it(tmp_path: Path) -> None:
    h = await build(tmp_path, policy=KernelPolicy(uid_range=(0, 0), gid_range=(0, 10)))
    try:
        kid = await h.create(uid=0, main_gid=0, supplementary_gids=[10])
        config = h.backend.containers[h.container_id(kid)].config
        assert config["User"] == "0:0" and config["HostConfig"]["GroupAdd"] == ["10"]
        assert container_env(h, kid)["LOCAL_USER_ID"] == "0"
    finally:
        await h.lc.close()


async def test_agent_values_win_in_docker_env_and_environ_txt(
        h: Harness, caplog: pytest.LogCaptureFixture) -> None:
    kid = new_id()
    with caplog.at_level(logging.WARNING, "berth.kernel.lifecycle"):
        await h.lc.create(kernel_config(environ=EVIL, uid=1234, main_gid=1234), kid, "sess")
    for env in (container_env(h, kid), environ_txt(h, kid)):
        assert (env["BACKENDAI_KERNEL_ID"], env["BACKENDAI_SESSION_ID"]) == (kid, "sess")
        assert (env["LOCAL_USER_ID"], env["HOME"], env["MY_VAR"]) == ("1234", "/home/work", "mine")
    assert environ_txt(h, kid) == container_env(h, kid)  # the runner loads it over the Env
    [line] = [r.getMessage() for r in caplog.records if "overridden" in r.getMessage()]
    assert "BACKENDAI_KERNEL_ID, BACKENDAI_SESSION_ID, HOME, LOCAL_USER_ID" in line


async def test_plugin_owned_variables_never_come_from_the_spec(tmp_path: Path) -> None:
    owned = frozenset({"MOCK_VISIBLE_DEVICES"})
    h = await build(tmp_path, policy=KernelPolicy(owned_environ=owned))
    try:
        kid = await h.create(environ={"MOCK_VISIBLE_DEVICES": "mock0,mock1", "MY_VAR": "x"})
        for env in (container_env(h, kid), environ_txt(h, kid)):
            assert "MOCK_VISIBLE_DEVICES" not in env and env["MY_VAR"] == "x"
    finally:
        await h.lc.close()


async def test_restart_applies_the_same_env_and_a_tightened_policy(h: Harness) -> None:
    kid = new_id()
    h.lc.s = dataclasses.replace(h.lc.s, policy=KernelPolicy(environ_deny=()))
    await h.lc.create(kernel_config(environ={**EVIL, "LD_PRELOAD": "/w/x.so"}), kid, "s")
    await h.lc.restart(kid)
    env = container_env(h, kid)
    assert env["BACKENDAI_KERNEL_ID"] == kid and env["LD_PRELOAD"] == "/w/x.so"
    # the operator tightens the policy (new config, agent restarted and the kernel adopted)
    h.lc.s = dataclasses.replace(h.lc.s, policy=KernelPolicy())
    cid = h.container_id(kid)
    with pytest.raises(EnvironRefused):
        await h.lc.restart(kid)
    kernel = h.registry.get(kid)  # refused before anything was stopped
    assert kernel.state == KernelState.RUNNING and kernel.container_id == cid
    assert h.backend.containers[cid].running


async def test_docker_exec_fallback_keeps_the_agents_env(h: Harness) -> None:
    seen: list[dict[str, str]] = []

    def docker_exec(container: FakeContainer, cmd: Sequence[str], user: str | None,
                    env: Mapping[str, str]) -> ExecResult:
        # Docker: the exec gets the container's Env with the exec's own env on top
        merged = dict(item.split("=", 1) for item in container.config["Env"]) | dict(env)
        seen.append(merged)
        return ExecResult(0, f"{merged['BACKENDAI_KERNEL_ID']}\n".encode(), b"")

    h.backend.exec_handler = docker_exec
    kid = await h.create(environ=EVIL)  # the idle image: no runner, batch goes by docker exec
    facade = facade_over("ag-unit", registry=h.registry, lifecycle=h.lc,
                                 backend=h.backend)
    result = await facade.execute("s", kid, 2, "r1", "batch", "", {"exec": "env"})
    while result["status"] != "finished":
        result = await facade.execute("s", kid, 2, "r1", "continue", "")
    assert seen and all(env["BACKENDAI_KERNEL_ID"] == kid for env in seen)
    assert all(env["MY_VAR"] == "mine" for env in seen)
