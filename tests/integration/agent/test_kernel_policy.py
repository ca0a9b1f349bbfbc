"""Issue 11 (findings 2 and 3) through a real agent process over RPC and real Docker: the
agent's and plugins' variables win over the spec's environ inside the kernel (Docker's env, the
runner's children, docker-exec batch, after a restart); a deny-listed variable and a root
uid/gid are refused at create with typed errors naming what was refused; an operator who allows
root in the config gets a kernel running as 0."""

from __future__ import annotations

import json
import subprocess
import uuid
from typing import Any

import pytest

from berth.client import AgentClient
from berth.errors import EnvironRefused, IdentityRefused

from .conftest import PYTHON, AgentFactory, AgentProcess, containers, kernel_config

AGENT = 'allow-compute-plugins = ["cpu", "mem", "mock"]'
MOCK = """
[plugins.mock]
count = 2
"""
EVIL = {
    "BACKENDAI_KERNEL_ID": "evil", "BACKENDAI_SESSION_ID": "evil", "LOCAL_USER_ID": "0",
    "HOME": "/root", "MOCK_VISIBLE_DEVICES": "mock0,mock1", "BERTH_MOCK_DEVICES": "mock0:1,mock1:1",
    "MY_VAR": "mine",
}
# The spec may replace PATH; the runner and the agent's commands use absolute paths and survive.
EVIL_PATH = {**EVIL, "PATH": "/opt/nowhere/bin"}
PRINT_ENV = "import json, os; print(json.dumps({**os.environ, 'uid': os.getuid(), 'gid': os.getgid()}))"


def with_environ(config: dict[str, Any], environ: dict[str, str], **extra: Any) -> dict[str, Any]:
    return {**config, "environ": environ, **extra}


def docker_inspect(container_id: str, fmt: str) -> str:
    proc = subprocess.run(["docker", "inspect", "-f", fmt, container_id], check=True,
                          capture_output=True, text=True, timeout=30)
    return proc.stdout.strip()


def config_env(container_id: str) -> dict[str, str]:
    """The env Docker starts the kernel's processes with (the image's, then the create body's)."""
    items = json.loads(docker_inspect(container_id, "{{json .Config.Env}}"))
    return dict(item.split("=", 1) for item in items)


async def container_of(c: AgentClient, kid: str) -> str:
    [kernel] = [k for k in (await c.get_status())["kernels"] if k["kernel_id"] == kid]
    return str(kernel["container_id"])


async def runner_env(c: AgentClient, kid: str) -> dict[str, Any]:
    """The env a kernel's code sees: a process the in-kernel runner started."""
    result = await c.execute_code(kid, PRINT_ENV)
    stdout = "".join(text for kind, text in result["console"] if kind == "stdout")
    assert result["status"] == "finished", result
    env: dict[str, Any] = json.loads(stdout)
    return env


async def batch_env(c: AgentClient, kid: str) -> dict[str, str]:
    """The env of a batch command in an image without Python (the agent's docker-exec path)."""
    result = await c.execute(kid, kid, 2, "job", "batch", "", {"exec": "env"})
    console = list(result["console"])
    while result["status"] != "finished":
        result = await c.execute(kid, kid, 2, "job", "continue", "", {})
        console += result["console"]
    out = "".join(text for kind, text in console if kind == "stdout")
    return dict(line.split("=", 1) for line in out.splitlines() if "=" in line)


def assert_agent_values(env: dict[str, Any], kid: str) -> None:
    assert (env["BACKENDAI_KERNEL_ID"], env["BACKENDAI_SESSION_ID"]) == (kid, kid), env
    assert (env["LOCAL_USER_ID"], env["HOME"]) == ("9001", "/home/work"), env
    assert env["MY_VAR"] == "mine"


@pytest.mark.timeout(240)
async def test_agent_and_plugin_variables_win_inside_the_kernel(
        agent_factory: AgentFactory) -> None:
    agent = await agent_factory(MOCK, agent_toml=AGENT)
    py, box = str(uuid.uuid4()), str(uuid.uuid4())
    async with agent.client() as c:
        await c.create_kernels(py, [py], [with_environ(
            kernel_config(PYTHON, **{"mock.device": "1"}), EVIL_PATH)], {})
        await c.create_kernels(box, [box], [with_environ(kernel_config(), EVIL)], {})
        docker_env = config_env(await container_of(c, box))
        seen = await runner_env(c, py)
        batch = await batch_env(c, box)
        await c.restart_kernel(py, py, None, {})
        after_restart = await runner_env(c, py)
    for env, kid in ((docker_env, box), (batch, box), (seen, py), (after_restart, py)):
        assert_agent_values(env, kid)
    for env in (seen, after_restart):  # the mock plugin gave one device; the spec asked for two
        assert env["MOCK_VISIBLE_DEVICES"] in ("mock0", "mock1"), env
        assert env["BERTH_MOCK_DEVICES"] == env["MOCK_VISIBLE_DEVICES"] + ":1"
        assert env["uid"] == 9001
        # the spec's PATH replaced the image's, and the runner (absolute paths) still ran code
        assert env["PATH"].endswith(":/opt/nowhere/bin") and "/usr/bin" not in env["PATH"]
    assert "MOCK_VISIBLE_DEVICES" not in docker_env  # no device for this kernel: none is set
    log = agent.log()
    assert "spec environ" in log and "BACKENDAI_KERNEL_ID" in log


async def refused(agent: AgentProcess, config: dict[str, Any], error: type[Exception]) -> Any:
    kid = str(uuid.uuid4())
    async with agent.client() as c:
        with pytest.raises(error) as info:
            await c.create_kernels(kid, [kid], [config], {})
        assert (await c.get_status())["kernels"] == []
    assert not containers(agent.agent_id, kid)
    return info.value


@pytest.mark.timeout(180)
async def test_deny_listed_variables_and_root_are_refused_over_rpc(
        agent_factory: AgentFactory) -> None:
    agent = await agent_factory()
    for name in ("LD_PRELOAD", "LD_AUDIT", "NVIDIA_VISIBLE_DEVICES"):
        err = await refused(agent, with_environ(kernel_config(), {"OK": "1", name: "x"}),
                            EnvironRefused)
        assert (err.variable, err.field) == (name, f"environ.{name}")
        # what any Manager sees: the FAILURE triple names the type and the variable
        assert err.remote.name == "EnvironRefused" and name in err.remote.representation
    err = await refused(agent, with_environ(kernel_config(), {}, uid=0), IdentityRefused)
    assert (err.field, err.value) == ("uid", 0) and "kernel-uid-range" in str(err)
    err = await refused(agent, with_environ(kernel_config(), {}, uid=1000, main_gid=0),
                        IdentityRefused)
    assert (err.field, err.value) == ("main_gid", 0)
    err = await refused(agent, with_environ(kernel_config(), {}, supplementary_gids=[0]),
                        IdentityRefused)
    assert (err.field, err.value) == ("supplementary_gids", 0)
    assert err.remote.name == "IdentityRefused"


@pytest.mark.timeout(180)
async def test_configured_root_kernel_runs_as_root(agent_factory: AgentFactory) -> None:
    agent = await agent_factory(container_toml="kernel-uid-range = [0, 65535]\n"
                                               "kernel-gid-range = [0, 65535]\n"
                                               "environ-deny-list = []")
    kid = str(uuid.uuid4())
    config = with_environ(kernel_config(PYTHON), {"LD_LIBRARY_PATH": "/opt/lib"},
                          uid=0, main_gid=0, supplementary_gids=[0])
    async with agent.client() as c:
        await c.create_kernels(kid, [kid], [config], {})
        env = await runner_env(c, kid)
        cid = await container_of(c, kid)
    assert (env["uid"], env["gid"], env["LOCAL_USER_ID"]) == (0, 0, "0")
    assert env["LD_LIBRARY_PATH"] == "/opt/lib"  # an emptied deny-list refuses nothing
    assert docker_inspect(cid, "{{.Config.User}}") == "0:0"
