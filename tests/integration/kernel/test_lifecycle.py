"""Kernel lifecycle on the real Docker engine: limits, scratch, mounts, ports, restart, causes."""

from __future__ import annotations

import asyncio
import time
import uuid
from pathlib import Path

import pytest

from berth.daemon.agent import Agent
from berth.errors import BerthError, InsufficientResource, KernelNotFound, MountRefused
from berth.daemon.facade import AgentFacade
from berth.types import KernelState, TerminationReason

from .conftest import (
    PYTHON, create, agent_config, assert_clean, eventually, exec_in, http_get, kernel_config,
)


def new_id() -> str:
    return str(uuid.uuid4())


async def test_limits_are_enforced_and_visible_inside(agent: Agent, facade: AgentFacade) -> None:
    kid = new_id()
    await create(facade, kernel_config(
        resource_slots={"cpu": "1", "mem": "256m"}, resource_opts={"shmem": "64m"}),
        kernel_id=kid)
    code, out = await exec_in(agent, kid, "cat", "/sys/fs/cgroup/cpu/cpu.cfs_quota_us",
                              "/sys/fs/cgroup/cpu/cpu.cfs_period_us",
                              "/sys/fs/cgroup/memory/memory.limit_in_bytes",
                              "/sys/fs/cgroup/memory/memory.memsw.limit_in_bytes",
                              "/sys/fs/cgroup/pids/pids.max", "/sys/fs/cgroup/cpuset/cpuset.cpus")
    assert code == 0, out
    quota, period, mem, memsw, pids, cpus = out.split()
    assert int(quota) == int(period)  # one CPU
    assert int(mem) == 256 * 2**20
    assert int(memsw) == 256 * 2**20  # swap disabled
    assert int(pids) == agent.config.container.pids_limit
    assert cpus  # pinned to a cpuset
    code, out = await exec_in(agent, kid, "sh", "-c", "df -k /dev/shm | tail -1; ulimit -n")
    assert out.split()[1] == str(64 * 1024), out
    code, out = await exec_in(agent, kid, "id", "-u")
    assert out.strip() == str(agent.config.container.kernel_uid)


async def test_status_and_destroy_records_cause(agent: Agent, facade: AgentFacade) -> None:
    kid = new_id()
    result = await create(facade, kernel_config(), kernel_id=kid)
    assert result["container_id"]
    assert await facade.check_running(kid)
    status = await facade.get_status()
    [view] = [k for k in status["kernels"] if k["kernel_id"] == kid]
    assert view["state"] == "RUNNING" and view["container_id"] == result["container_id"]
    await facade.destroy_kernel(kid, kid)
    ended = agent.registry.ended(kid)
    assert ended is not None and ended.termination is not None
    assert ended.termination.reason == TerminationReason.USER_REQUESTED
    await facade.destroy_kernel(kid, kid)  # idempotent
    with pytest.raises(KernelNotFound):
        await facade.destroy_kernel(new_id(), "s")


async def test_restart_keeps_work_files_ports_and_allocation(agent: Agent,
                                                             facade: AgentFacade) -> None:
    kid = new_id()
    created = await create(facade, kernel_config(preopen_ports=[8081]), kernel_id=kid)
    await exec_in(agent, kid, "sh", "-c", "echo kept > /home/work/note.txt")
    before = agent.registry.get(kid)
    ports, allocation = dict(before.host_ports), before.allocation
    assert allocation is not None
    restarted = await facade.restart_kernel(kid, kid)
    assert restarted["container_id"] != created["container_id"]
    after = agent.registry.get(kid)
    assert after.host_ports == ports and after.allocation == allocation
    code, out = await exec_in(agent, kid, "cat", "/home/work/note.txt")
    assert out.strip() == "kept"


async def test_service_port_answers_on_its_host_port(agent: Agent, facade: AgentFacade) -> None:
    kid = new_id()
    await create(facade, kernel_config(
        preopen_ports=[8081],
        bootstrap_script="echo hello-from-kernel > /home/work/index.html; "
                         "httpd -p 8081 -h /home/work"), kernel_id=kid)
    port = agent.registry.get(kid).host_ports["8081"][0]
    assert b"hello-from-kernel" in http_get(port, "/index.html")


async def test_python_image_serves_its_declared_http_service(agent: Agent,
                                                             facade: AgentFacade) -> None:
    kid = new_id()
    await create(facade, kernel_config(PYTHON, bootstrap_script="echo hi > /home/work/x"),
                               kernel_id=kid)
    assert (await facade.start_service(kid, "http-server"))["status"] == "started"
    port = agent.registry.get(kid).host_ports["http-server"][0]
    assert b" 200 " in http_get(port, "/x").split(b"\r\n")[0]


async def test_ro_mount_refuses_writes_and_rw_mount_accepts(agent: Agent, facade: AgentFacade,
                                                            tmp_path: Path) -> None:
    ro, rw = tmp_path / "vfolders" / "data", tmp_path / "vfolders" / "out"
    ro.mkdir()
    rw.mkdir()
    (ro / "f.txt").write_text("ro")
    import os
    os.chown(rw, agent.config.container.kernel_uid, agent.config.container.kernel_gid)
    kid = new_id()
    await create(facade, kernel_config(mounts=[
        {"name": "data", "host_path": str(ro), "mount_perm": "ro"},
        {"name": "out", "host_path": str(rw), "mount_perm": "rw"}]), kernel_id=kid)
    code, out = await exec_in(agent, kid, "sh", "-c", "echo x > /home/work/data/new")
    assert code != 0 and "Read-only" in out
    code, _ = await exec_in(agent, kid, "sh", "-c", "echo y > /home/work/out/new")
    assert code == 0 and (rw / "new").stat().st_uid == agent.config.container.kernel_uid


async def test_bad_mounts_are_refused_and_leave_nothing(agent: Agent, facade: AgentFacade) -> None:
    for mount in ({"name": "etc", "host_path": "/etc", "mount_perm": "ro"},
                  {"name": "x", "host_path": str(agent.config.container.vfolder_allowed_roots[0]),
                   "kernel_path": "/home/config", "mount_perm": "rw"}):
        with pytest.raises(MountRefused):
            await create(facade, kernel_config(mounts=[mount]), kernel_id=new_id())
    assert not agent.registry.live()
    assert agent.parts.resources.used_slots()["cpu"] == 0


async def test_over_budget_kernel_is_refused_with_typed_error(agent: Agent,
                                                              facade: AgentFacade) -> None:
    with pytest.raises(InsufficientResource) as err:
        await create(facade, kernel_config(resource_slots={"cpu": "64", "mem": "1g"}),
                                   kernel_id=new_id())
    assert err.value.slot == "cpu"


MAIN_PID = "$(cut -d' ' -f1 /proc/1/task/1/children)"


async def test_oom_and_plain_kill_are_told_apart(agent: Agent, facade: AgentFacade) -> None:
    survivor, plain, main_oom = new_id(), new_id(), new_id()
    for kid in (survivor, plain, main_oom):
        await create(facade, kernel_config(resource_slots={"cpu": "0.5", "mem": "64m"},
                                           resource_opts={"shmem": "256m"}), kernel_id=kid)
    # A memory hog is OOM-killed by the kernel's memory cgroup; the kernel itself lives on
    # (Docker's OOM flag is set for the rest of the container's life all the same).
    code, _ = await exec_in(agent, survivor, "sh", "-c", "head -c 200000000 /dev/zero | tail")
    assert code == 137
    await eventually(lambda: _survived_oom(agent, survivor), timeout=15)
    assert await facade.check_running(survivor)
    # A plain SIGKILL of the main process, after that OOM or without one: not an OOM kill.
    for kid in (survivor, plain):
        await exec_in(agent, kid, "sh", "-c", f"kill -KILL {MAIN_PID}")
    # The main process itself chosen by the OOM killer: its end is an OOM kill. /dev/shm pages
    # are charged to the memory cgroup but belong to no process, so with the main process made
    # the preferred victim, filling /dev/shm past the memory limit OOM-kills the main process.
    try:
        await exec_in(agent, main_oom, "sh", "-c", f"echo 1000 > /proc/{MAIN_PID}/oom_score_adj"
                      " && dd if=/dev/zero of=/dev/shm/fill bs=1M count=200")
    except BerthError:
        pass  # the exec may go down with its container
    for kid in (survivor, plain, main_oom):
        await eventually(lambda kid=kid: _ended(agent, kid), timeout=30)
    reasons = {}
    for kid in (survivor, plain, main_oom):
        ended = agent.registry.ended(kid)
        assert ended and ended.termination and ended.termination.exit_code == 137
        reasons[kid] = ended.termination.reason
    assert reasons == {survivor: TerminationReason.SELF_TERMINATED,
                       plain: TerminationReason.SELF_TERMINATED,
                       main_oom: TerminationReason.OOM_KILLED}


async def _survived_oom(agent: Agent, kid: str) -> bool:
    return agent.registry.get(kid).oom.survived >= 1


async def test_sigbus_death_is_reported_as_shm_exhausted(agent: Agent,
                                                         facade: AgentFacade) -> None:
    kid = new_id()
    await create(facade, kernel_config(resource_opts={"shmem": "8m"}), kernel_id=kid)
    # A process touching a page of a full /dev/shm gets SIGBUS; deliver that signal to the
    # kernel's main process and check the agent reads 135 as shm exhaustion.
    await exec_in(agent, kid, "sh", "-c", f"kill -BUS {MAIN_PID}")
    await eventually(lambda: _ended(agent, kid), timeout=30)
    ended = agent.registry.ended(kid)
    assert ended and ended.termination
    assert ended.termination.reason == TerminationReason.SHM_EXHAUSTED
    assert ended.termination.exit_code == 135


async def _ended(agent: Agent, kid: str) -> bool:
    return agent.registry.ended(kid) is not None


async def test_container_exiting_by_itself_is_noticed_and_cleaned(agent: Agent,
                                                                  facade: AgentFacade) -> None:
    kid = new_id()
    await create(facade, kernel_config(), kernel_id=kid)
    used = agent.parts.resources.used_slots()["cpu"]
    await exec_in(agent, kid, "sh", "-c", "kill -TERM 1")
    await eventually(lambda: _ended(agent, kid))
    ended = agent.registry.ended(kid)
    assert ended and ended.termination
    assert ended.termination.reason == TerminationReason.SELF_TERMINATED
    assert ended.termination.exit_code == 0
    assert agent.parts.resources.used_slots()["cpu"] == used - 1
    assert not (agent.config.container.scratch_root / kid).exists()


async def test_hostfile_scratch_quota_refuses_an_oversized_write(tmp_path: Path,
                                                                 agent_id: str) -> None:
    agent = Agent(agent_config(tmp_path, agent_id, **{
        "container.scratch-type": "hostfile", "container.scratch-size": "32m"}))
    await agent.startup()
    facade = AgentFacade.of(agent)
    try:
        kid = new_id()
        await create(facade, kernel_config(), kernel_id=kid)
        code, out = await exec_in(agent, kid, "sh", "-c",
                                  "dd if=/dev/zero of=/home/work/big bs=1M count=64")
        assert code != 0 and "No space left" in out
        code, out = await exec_in(agent, kid, "sh", "-c",
                                  "rm /home/work/big; dd if=/dev/zero of=/home/work/small bs=1M count=4")
        assert code == 0, out
    finally:
        await facade.reset_agent()
        await agent.shutdown()
    assert_clean(tmp_path / "scratch")


async def test_creation_deadline_ends_the_kernel_with_a_reason(tmp_path: Path,
                                                               agent_id: str) -> None:
    agent = Agent(agent_config(tmp_path, agent_id, **{
        "kernel-lifecycles.creating-timeout-sec": 1.5}))
    await agent.startup()
    facade = AgentFacade.of(agent)
    try:
        kid = new_id()
        with pytest.raises(Exception) as err:
            await create(facade, kernel_config(bootstrap_script="sleep 30"), kernel_id=kid)
        assert "deadline" in str(err.value)
        ended = agent.registry.ended(kid)
        assert ended and ended.termination
        assert ended.termination.reason == TerminationReason.DEADLINE
        assert agent.registry.find(kid) is None
    finally:
        await agent.shutdown()
    assert_clean(tmp_path / "scratch")




async def test_http_service_is_served_over_tls_when_configured(tmp_path: Path,
                                                               agent_id: str) -> None:
    import ssl
    import subprocess
    import urllib.request

    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
                    "-subj", "/CN=localhost", "-addext", "subjectAltName=IP:127.0.0.1",
                    "-keyout", str(key), "-out", str(cert)], check=True, capture_output=True)
    agent = Agent(agent_config(tmp_path, agent_id, **{
        "service-tls.cert": str(cert), "service-tls.key": str(key)}))
    await agent.startup()
    facade = AgentFacade.of(agent)
    try:
        kid = new_id()
        await create(facade, kernel_config(PYTHON, bootstrap_script="echo tls-ok > /home/work/t"),
                     kernel_id=kid)
        assert (await facade.start_service(kid, "http-server"))["status"] == "started"
        port = agent.registry.get(kid).host_ports["http-server"][0]
        context = ssl.create_default_context(cafile=str(cert))
        body = await asyncio.to_thread(lambda: urllib.request.urlopen(
            f"https://127.0.0.1:{port}/t", context=context, timeout=10).read())
        assert body == b"tls-ok\n"
        with pytest.raises(OSError):  # plain HTTP is not served on that port
            await asyncio.to_thread(lambda: urllib.request.urlopen(
                f"http://127.0.0.1:{port}/t", timeout=5).read())
    finally:
        await facade.reset_agent()
        await agent.shutdown()
    assert_clean(tmp_path / "scratch")


async def test_image_without_python_runs_batch_and_refuses_query(agent: Agent,
                                                                 facade: AgentFacade) -> None:
    from berth.errors import RuntimeMissing

    kid = new_id()
    await create(facade, kernel_config(), kernel_id=kid)
    opts = {"build": "echo building; exit 0", "exec": "echo ran as $(id -u); exit 3"}
    result = await facade.execute(kid, kid, 2, "job", "batch", "", opts, None)
    while result["status"] != "finished":
        result = await facade.execute(kid, kid, 2, "job", "continue", "", {}, None)
    assert result["exitCode"] == 3
    assert f"ran as {agent.config.container.kernel_uid}" in str(result["console"])
    with pytest.raises(RuntimeMissing):
        await facade.execute(kid, kid, 2, None, "query", "print(1)", {}, None)


async def test_batch_session_reports_success_and_failure_as_events(agent: Agent,
                                                                   facade: AgentFacade) -> None:
    from berth.events import RecordingEmitter

    recorder = RecordingEmitter()
    agent.parts.link.emitter = recorder  # type: ignore[assignment]
    ok, bad = new_id(), new_id()
    for kid in (ok, bad):
        await create(facade, kernel_config(PYTHON), kernel_id=kid)
    await facade.trigger_batch_execution(ok, ok, "python3 -c 'print(1)'", 30)
    await facade.trigger_batch_execution(bad, bad, "exit 7", 30)

    async def both_done() -> bool:
        return sum(e.name.startswith("session_") for e in recorder.events) == 2

    await eventually(both_done, timeout=30)
    results = {e.session_id: (e.name, e.exit_code) for e in recorder.events  # type: ignore[attr-defined]
               if e.name.startswith("session_")}
    assert results == {ok: ("session_success", 0), bad: ("session_failure", 7)}


async def test_block_io_throttle_from_resource_opts_is_enforced(agent: Agent,
                                                                facade: AgentFacade) -> None:
    """Timed inside the kernel: 24 MiB written with fsync under io_write_bps = 4m takes
    about 6 s (a rule in a cgroup file proves nothing about the writes)."""
    if agent.parts.blkio_device is None:
        pytest.fail("no block device found under the Docker root: throttling cannot be tested")
    kid = new_id()
    await create(facade, kernel_config(resource_opts={"io_write_bps": "4m"}), kernel_id=kid)
    started = time.monotonic()
    code, out = await exec_in(agent, kid, "dd", "if=/dev/zero", "of=/tmp/big", "bs=1M",
                              "count=24", "conv=fsync")
    elapsed = time.monotonic() - started
    assert code == 0, out
    assert elapsed >= 5.0, f"24 MiB under 4 MB/s took {elapsed:.2f}s"


async def test_missing_image_is_pulled_from_the_registry_during_create(
        agent: Agent, facade: AgentFacade) -> None:
    import subprocess
    import urllib.request

    try:
        urllib.request.urlopen("http://127.0.0.1:5000/v2/", timeout=3).close()
    except OSError:
        pytest.fail("the local registry on 127.0.0.1:5000 does not answer: "
                    "run scripts/setup.sh --test-services")
    ref = f"localhost:5000/berth-itest/busybox:{uuid.uuid4().hex[:8]}"
    run = lambda *a: subprocess.run(["docker", *a], check=True, capture_output=True)  # noqa: E731
    run("tag", "berth/busybox:latest", ref)
    run("push", ref)
    run("rmi", ref)
    try:
        kid = new_id()
        config = kernel_config()
        config["image"] = {"canonical": ref, "is_local": False, "auto_pull": "tag",
                           "labels": {"ai.backend.runtime-type": "app"}}
        await create(facade, config, kernel_id=kid)
        kernel = agent.registry.get(kid)
        assert kernel.state == KernelState.RUNNING
        assert "pull" in kernel.phase_durations
    finally:
        await facade.reset_agent()
        subprocess.run(["docker", "rmi", "-f", ref], capture_output=True)


async def test_container_output_is_shipped_to_redis_before_removal(tmp_path: Path,
                                                                   agent_id: str) -> None:
    import redis.asyncio as aioredis

    from berth.events import decode_log_chunk

    agent = Agent(agent_config(tmp_path, agent_id, **{"redis.addr": "127.0.0.1:6379"}))
    await agent.startup()
    facade = AgentFacade.of(agent)
    client = aioredis.Redis.from_url("redis://127.0.0.1:6379/6")
    try:
        kid = new_id()
        await create(facade, kernel_config(), kernel_id=kid)
        cid = agent.registry.get(kid).container_id
        await exec_in(agent, kid, "sh", "-c", "echo shipped-line > /proc/1/fd/1")
        await facade.destroy_kernel(kid, kid)
        chunks = await client.lrange(f"containerlog.{cid}", 0, -1)
        text = b"".join(decode_log_chunk(c) for c in chunks).decode()
        assert "shipped-line" in text
        await client.delete(f"containerlog.{cid}")
    finally:
        await client.aclose()
        await facade.reset_agent()
        await agent.shutdown()
    assert_clean(tmp_path / "scratch")
