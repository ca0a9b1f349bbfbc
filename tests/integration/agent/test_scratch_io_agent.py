"""Issue 12 item 4 through a real agent process with a loop-device scratch
(`scratch-type = "hostfile"`): `/home/work` writes are throttled by `io_write_bps` (timed
inside the kernel, not read from a cgroup file) and counted in `io_write`, and the kernel's
scratch usage is reported as `io_scratch_size` against its quota.

Before the fix, 24 MiB with fsync took 0.07 s under a 4 MB/s limit (the rule was on the
Docker data root's disk only; the loop device's writes went through the host page cache),
io_write did not move and io_scratch_size was never measured.
"""

from __future__ import annotations

import asyncio
import subprocess
import time
import urllib.request
import uuid

import pytest
from prometheus_client.parser import text_string_to_metric_families

from .conftest import AgentFactory, AgentProcess, docker_exec, eventually, kernel_config

MiB = 1 << 20
HOSTFILE = 'scratch-type = "hostfile"\nscratch-size = "256m"\n'
FAST = "[debug]\nstats-interval = 1.0\n"


def series(agent: AgentProcess, kid: str) -> dict[tuple[str, str], float]:
    """(container_metric_name, value_type) → value of one kernel on the agent's /metrics."""
    url = f"http://127.0.0.1:{agent.internal_port}/metrics"
    with urllib.request.urlopen(url, timeout=5) as resp:
        text = resp.read().decode()
    return {(s.labels["container_metric_name"], s.labels["value_type"]): s.value
            for f in text_string_to_metric_families(text) for s in f.samples
            if s.name == "backendai_container_utilization" and s.labels["kernel_id"] == kid}


def timed_write(container_id: str, mib: int, name: str) -> float:
    """Seconds for `dd ... conv=fsync` of `mib` MiB into /home/work, measured by the caller."""
    started = time.monotonic()
    proc = subprocess.run(
        ["docker", "exec", container_id, "dd", "if=/dev/zero", f"of=/home/work/{name}",
         "bs=1M", f"count={mib}", "conv=fsync"], check=False, capture_output=True, text=True,
        timeout=120)
    elapsed = time.monotonic() - started
    assert proc.returncode == 0, proc.stderr
    return elapsed


@pytest.mark.timeout(240)
async def test_home_work_on_a_loop_scratch_is_throttled_counted_and_sized(
        agent_factory: AgentFactory) -> None:
    agent = await agent_factory(FAST, container_toml=HOSTFILE)
    limited, free = str(uuid.uuid4()), str(uuid.uuid4())
    async with agent.client() as c:
        config = kernel_config()
        config["resource_opts"] = {"io_write_bps": "4m"}
        await c.create_kernels(limited, [limited], [config], {})
        await c.create_kernels(free, [free], [kernel_config()], {})
        containers = {k["kernel_id"]: k["container_id"] for k in (await c.get_status())["kernels"]}

    # the loop device really is the kernel's /home/work
    mount = await asyncio.to_thread(docker_exec, containers[limited], "grep", " /home/work ",
                                    "/proc/mounts")
    assert "ext4" in mount, mount

    unlimited = await asyncio.to_thread(timed_write, containers[free], 24, "control")
    throttled = await asyncio.to_thread(timed_write, containers[limited], 24, "big")
    assert throttled >= 5.0, f"24 MiB under 4 MB/s took {throttled:.2f}s"
    assert unlimited < throttled / 2, (unlimited, throttled)

    async def counted() -> bool:
        got = await asyncio.to_thread(series, agent, limited)
        return (got.get(("io_write", "current"), 0) >= 24 * MiB
                and got.get(("io_scratch_size", "current"), 0) >= 24 * MiB)

    await eventually(counted, timeout=15, what="io_write and io_scratch_size of the kernel")
    got = await asyncio.to_thread(series, agent, limited)
    # counted once, not once on the loop device and again on the disk behind it
    assert got[("io_write", "current")] < 40 * MiB, got
    assert got[("io_scratch_size", "capacity")] == 256 * MiB
    assert 9 <= got[("io_scratch_size", "pct")] <= 20, got  # 24 MiB (+ fs metadata) of 256
