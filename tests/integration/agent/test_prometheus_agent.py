"""Issues 6 and 12 through the wired agent: a real Prometheus scrapes a real agent process whose
kernels burn CPU and move network bytes; every dashboard panel and every one of the seed's
example PromQL queries (as written, support.promql.SEED_EXAMPLES) returns data — node network
per device, the process stat scope and per-process series included — and a destroyed kernel's
series leave /metrics."""

from __future__ import annotations

import asyncio
import subprocess
import urllib.request
import uuid
from collections.abc import Callable

import aiohttp
import pytest
from support.procs import SERVICE_GROUP
from support.promql import SEED_EXAMPLES, dashboard_queries, query, seed_examples, wait_for_data

from berth.errors import KernelNotFound

from .conftest import AgentFactory, AgentProcess, RedisServer, eventually, kernel_config

MORE = (
    "rate(backendai_rpc_requests_total[1m])",
    'backendai_container_utilization{container_metric_name="cpu_util",value_type="pct"}',
    'backendai_container_utilization{container_metric_name="net_rx",value_type="current"}',
    'backendai_container_utilization{container_metric_name="net_tx",value_type="current"}',
    "backendai_kernel_count",
    "rate(backendai_rpc_request_duration_seconds_count[1m])",
    'backendai_device_utilization{device_metric_name="net_rx",value_type="current"}',
    'backendai_stat_task_success_count_total{stat_scope="process"} > 0',
    'backendai_process_utilization{process_metric_name="cpu_util",value_type="current"}',
)
GPU_NAMES = ("cuda_", "gpu_usage")
AGENT = 'allow-compute-plugins = ["cpu", "mem", "mock"]'
# The mock stands in for GPUs under the cuda_* names, so the GPU panels have data here too.
MOCK = "[plugins.mock]\ncount = 2\nmetric-prefix = \"cuda\"\n[debug]\nstats-interval = 1.0\nheartbeat-interval = 1.0\n"


class GpuSeriesMissing(AssertionError):
    """The accelerator panels have no data (plugin measures are not wired into telemetry)."""


def bridge_gateway() -> str:
    """docker0's own address; `ip route get` must say it is local, so pings stay on this host."""
    addr = subprocess.run(["ip", "-4", "-o", "addr", "show", "dev", "docker0"],
                          check=False, capture_output=True, text=True).stdout.split()
    gateway = addr[3].split("/")[0] if len(addr) > 3 else ""
    route = subprocess.run(["ip", "route", "get", gateway], check=False, capture_output=True, text=True)
    if not gateway or not route.stdout.startswith("local "):
        pytest.fail(f"docker0 gateway {gateway!r} is not host-local: {route.stdout!r}")
    return gateway


def metrics_text(agent: AgentProcess) -> str:
    url = f"http://127.0.0.1:{agent.internal_port}/metrics"
    with urllib.request.urlopen(url, timeout=5) as resp:
        return str(resp.read().decode())


def burn_and_ping(container_id: str, gateway: str) -> None:
    """Background load inside the kernel: one busy loop and a ping every 0.3 s to docker0."""
    script = f"yes > /dev/null & while :; do ping -c 1 -W 1 {gateway}; sleep 0.3; done"
    subprocess.run(["docker", "exec", "-d", "-u", "0", container_id, "sh", "-c", script],
                   check=True, capture_output=True)


@pytest.mark.timeout(200)
async def test_every_panel_and_example_query_returns_data_from_the_agent(
        agent_factory: AgentFactory, prometheus: Callable[[int], str],
        redis_server: RedisServer) -> None:
    """The full agent: with Redis, as in production (the heartbeat gauge needs heartbeats)."""
    agent = await agent_factory(MOCK + redis_server.toml, agent_toml=AGENT)
    gateway = bridge_gateway()
    kids = [str(uuid.uuid4()) for _ in range(2)]
    async with agent.client() as c:
        for kid in kids:
            await c.create_kernels(kid, [kid], [kernel_config(**{"mock.device": "1"})], {})
        status = await c.get_status()
        for k in status["kernels"]:
            burn_and_ping(k["container_id"], gateway)
        with pytest.raises(KernelNotFound):
            await c.destroy_kernel(str(uuid.uuid4()), "nobody")  # one counted RPC failure
    base = prometheus(agent.internal_port)
    seed = seed_examples(SERVICE_GROUP)
    assert len(seed) == len(SEED_EXAMPLES) == 20
    queries = dashboard_queries() + seed + list(MORE)
    assert len(queries) >= 45
    gpu = [q for q in queries if any(g in q for g in GPU_NAMES)]
    plain = await wait_for_data(base, [q for q in queries if q not in gpu], timeout=90)
    assert not plain, f"queries without data: {sorted(plain)}\n{agent.log()}"
    # scraped from the start like the others, so a few more seconds is plenty
    gpu_empty = await wait_for_data(base, gpu, timeout=10)
    async with aiohttp.ClientSession() as http:
        cpu = await query(http, base, 'backendai_container_utilization'
                                       '{container_metric_name="cpu_util",value_type="pct"}')
        rx = await query(http, base, 'backendai_container_utilization'
                                      '{container_metric_name="net_rx",value_type="current"}')
        age = await query(http, base, "time() - backendai_agent_heartbeat")
        node_rx = await query(http, base, seed[12])
        procs = await query(http, base, 'backendai_process_utilization'
                                         '{process_metric_name="cpu_util",value_type="current"}')
    assert age and float(age[0]["value"][1]) < 10, age  # type: ignore[index]
    assert {s["metric"]["kernel_id"] for s in cpu} == set(kids)  # type: ignore[index]
    assert all(float(s["value"][1]) > 1 for s in cpu), cpu  # type: ignore[index]
    assert all(float(s["value"][1]) > 0 for s in rx), rx  # type: ignore[index]
    assert node_rx and float(node_rx[0]["value"][1]) > 0, node_rx  # type: ignore[index]
    # the busy loop of each kernel shows as one of its processes
    busy = {s["metric"]["kernel_id"] for s in procs if float(s["value"][1]) > 1}  # type: ignore[index]
    assert busy == set(kids), procs

    async with agent.client() as c:
        await c.destroy_kernel(kids[0], kids[0])

    async def series_gone() -> bool:
        text = await asyncio.to_thread(metrics_text, agent)
        assert f'kernel_id="{kids[1]}"' in text
        return f'kernel_id="{kids[0]}"' not in text

    await eventually(series_gone, timeout=5, what="destroyed kernel's series leaving /metrics")

    if gpu_empty:
        raise GpuSeriesMissing(f"accelerator queries without data: {sorted(gpu_empty)}")
