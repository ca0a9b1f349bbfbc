"""A real Prometheus (Debian's binary, started here on a free loopback port) scrapes web.py
serving live container stats; every PromQL query of the Grafana dashboard and every one of the
seed's example queries (support.promql.SEED_EXAMPLES, as written) returns data."""

from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncIterator, Callable, Iterator
from decimal import Decimal
from pathlib import Path

import aiohttp
import pytest
from support.procs import SERVICE_GROUP, prometheus_servers
from support.promql import dashboard_queries, query, seed_examples, wait_for_data

from berth.errors import KernelNotFound
from berth.telemetry.metrics import BerthMetrics, Holdings
from berth.stats import (
    CgroupReader,
    HostCapacity,
    KernelTarget,
    Metric,
    NodeCollector,
    ProcessCollector,
    StatsCollector,
)
from berth.types import ContainerId, KernelId
from berth.telemetry.web import InternalServer

from .conftest import Container


@pytest.fixture
def prometheus(tmp_path: Path) -> Iterator[Callable[[int], str]]:
    """``start(target_port)`` → base URL of a Prometheus scraping 127.0.0.1:target every 1 s."""
    yield from prometheus_servers(tmp_path)


def mock_gpus() -> dict[str, dict[str, Metric]]:
    """Stands in for the mock accelerator plugin's per-device figures."""
    return {key: {f"mock:{i}": Metric(key, Decimal(value), cap, unit) for i in range(2)}
            for key, value, cap, unit in (
                ("cuda_util", 42, Decimal(100), "percent"),
                ("cuda_mem", 1 << 30, Decimal(8 << 30), "bytes"))}


def mock_kernel_gpu(target: KernelTarget) -> dict[str, Metric]:
    return {"cuda_util": Metric("cuda_util", Decimal(42), Decimal(100), "percent"),
            "cuda_mem": Metric("cuda_mem", Decimal(1 << 30), Decimal(8 << 30), "bytes")}


async def _stats_loop(collector: StatsCollector, node: NodeCollector, metrics: BerthMetrics,
                      targets: list[KernelTarget], processes: ProcessCollector) -> None:
    while True:
        with metrics.stat_task("container"):
            await collector.collect(targets)
        with metrics.stat_task("process"):
            collector.set_processes(await asyncio.to_thread(processes.collect, targets))
        with metrics.stat_task("node"):
            collector.set_node(await asyncio.to_thread(node.collect))
        metrics.observe_lifecycle_sync()
        metrics.heartbeat()
        # No RPC server in this tier: the lead's full-agent run drives these with real calls.
        metrics.observe_rpc("ping", 0.002)
        await asyncio.sleep(0.5)


@pytest.fixture
async def agent_side(run_container: Callable[..., Container],
                     bridge_gateway: str) -> AsyncIterator[int]:
    """web.py serving a registry fed by live stats of two CPU-burning, pinging containers."""
    script = f"yes > /dev/null & while true; do ping -c 1 -W 1 {bridge_gateway}; sleep 0.3; done"
    containers = [run_container(script, "--cpus", "0.5") for _ in range(2)]
    targets = [KernelTarget(KernelId(f"kernel-{i}"), ContainerId(c.id), c.pid,
                            session_id=f"sess-{i}", user_id="user-1", project_id="proj-1")
               for i, c in enumerate(containers)]
    reader = CgroupReader()
    collector = StatsCollector(reader.read, HostCapacity(os.cpu_count() or 1, 1 << 34),
                               kernel_sources=[mock_kernel_gpu])
    metrics = BerthMetrics("agent-test", lambda: collector.latest)
    metrics.set_kernel_count(len(targets))
    metrics.set_holdings_source(lambda: Holdings(  # what an agent with these kernels holds
        containers=len(targets), ledgers=len(targets), scratch_dirs=len(targets),
        host_ports=2 * len(targets), slots={"cpu": Decimal(len(targets)), "mem": Decimal(1 << 30)}))
    metrics.observe_rpc("destroy_kernel", 0.4, KernelNotFound(kernel_id="gone"))
    for phase, seconds in (("pull", 0.2), ("create", 0.05), ("start", 0.3)):
        metrics.observe_start_phase(phase, seconds)
    server = InternalServer("127.0.0.1:0", metrics)
    await server.start()
    loop = asyncio.create_task(_stats_loop(collector, NodeCollector(device_sources=[mock_gpus]),
                                           metrics, targets, ProcessCollector(reader.read_pids)))
    try:
        yield server.port
    finally:
        loop.cancel()
        await asyncio.gather(loop, return_exceptions=True)
        await server.close()
        collector.close()


@pytest.mark.timeout(150)
async def test_every_dashboard_query_returns_data(
        agent_side: int, prometheus: Callable[[int], str]) -> None:
    base = prometheus(agent_side)
    queries = dashboard_queries() + seed_examples(SERVICE_GROUP)
    assert len(queries) >= 40
    pending = await wait_for_data(base, queries, timeout=90)
    async with aiohttp.ClientSession() as http:
        up = await query(http, base, 'up{job="berth-agent"}')
        series = await query(http, base, 'backendai_container_utilization'
                                         '{container_metric_name="cpu_util",value_type="current"}')
    assert not pending, f"dashboard queries without data: {sorted(pending)}"
    assert up and up[0]["value"][1] == "1"  # type: ignore[index]
    assert {s["metric"]["kernel_id"] for s in series} == {"kernel-0", "kernel-1"}  # type: ignore[index]
    assert any(float(s["value"][1]) > 5 for s in series)  # type: ignore[index]
