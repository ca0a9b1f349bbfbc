"""PromQL against a test Prometheus over HTTP, and the Grafana dashboard's queries."""

from __future__ import annotations

import asyncio
import json
import time
from pathlib import Path

import aiohttp

DASHBOARD = Path(__file__).resolve().parents[2] / "deploy/grafana/berth-dashboard.json"

# The seed's example queries, as written: Backend.AI's agent README, "Prometheus Query
# Examples" (RPC, container, device, lifecycle sync, stat tasks). `$service_groups` is a
# Grafana variable over the `service_group` target label its service discovery sets (the test
# Prometheus sets it too, support.procs.SERVICE_GROUP).
SEED_EXAMPLES = (
    'sum(rate(backendai_rpc_requests_total{service_group="$service_groups"}[5m])) by (method)',
    ('sum(rate(backendai_rpc_failure_requests_total{service_group="$service_groups"}[5m]))'
     ' by (method, exception)'),
    ('histogram_quantile(0.95,\n  sum(rate(backendai_rpc_request_duration_seconds_bucket'
     '{service_group="$service_groups"}[5m])) by (le, method)\n)'),
    ('topk(5, sum(backendai_container_utilization{container_metric_name="cuda_mem",'
     ' value_type="current"}) by (kernel_id))'),
    ('topk(5, sum(backendai_container_utilization{container_metric_name="cuda_util",'
     ' value_type="current"}) by (kernel_id))'),
    ('topk(5, sum(increase(backendai_container_utilization{container_metric_name="cpu_util",'
     ' value_type="current"}[5m])) by (kernel_id)) / 1000'),
    ('sum(increase(backendai_container_utilization{container_metric_name="net_rx",'
     ' value_type="current"}[5m])) by (kernel_id)'),
    ('sum(increase(backendai_container_utilization{container_metric_name="net_tx",'
     ' value_type="current"}[5m])) by (kernel_id)'),
    ('sum(backendai_device_utilization{device_metric_name="cuda_mem", value_type="current"})'
     ' by (agent_id)'),
    ('sum(backendai_device_utilization{device_metric_name="cuda_mem", value_type="capacity"})'
     ' by (agent_id)'),
    ('sum(backendai_device_utilization{device_metric_name="cuda_util", value_type="current"})'
     ' by (agent_id)'),
    ('sum(increase(backendai_device_utilization{device_metric_name="cpu_util",'
     ' value_type="current"}[5m])) by (agent_id) / 1000'),
    ('sum(increase(backendai_device_utilization{device_metric_name="net_rx",'
     ' value_type="current"}[5m])) by (agent_id)'),
    ('sum(increase(backendai_device_utilization{device_metric_name="net_tx",'
     ' value_type="current"}[5m])) by (agent_id)'),
    "sum(rate(backendai_sync_container_lifecycle_trigger_count_total[5m])) by (agent_id)",
    "sum(rate(backendai_sync_container_lifecycle_success_count_total[5m])) by (agent_id)",
    ("sum(rate(backendai_sync_container_lifecycle_failure_count_total[5m]))"
     " by (agent_id, exception)"),
    "sum(rate(backendai_stat_task_trigger_count_total[5m])) by (agent_id, stat_scope)",
    "sum(rate(backendai_stat_task_success_count_total[5m])) by (agent_id, stat_scope)",
    "sum(rate(backendai_stat_task_failure_count_total[5m])) by (agent_id, stat_scope, exception)",
)


def seed_examples(service_group: str) -> list[str]:
    """The seed's queries with Grafana's `$service_groups` set to the scraped target's group."""
    return [q.replace("$service_groups", service_group) for q in SEED_EXAMPLES]


def dashboard_queries() -> list[str]:
    """Every panel target's expression, ``$agent`` matching any agent."""
    panels = json.loads(DASHBOARD.read_text())["panels"]
    return [t["expr"].replace("$agent", ".*") for p in panels for t in p["targets"]]


async def query(http: aiohttp.ClientSession, base: str, expr: str) -> list[object]:
    """The instant-query result vector of ``expr``; asserts that Prometheus accepted it."""
    async with http.get(f"{base}/api/v1/query", params={"query": expr}) as resp:
        body = await resp.json()
    assert body["status"] == "success", (expr, body)
    return list(body["data"]["result"])


async def wait_for_data(base: str, queries: list[str], timeout: float) -> set[str]:
    """Poll until every query returns data; the ones still empty at the deadline."""
    pending = set(queries)
    deadline = time.monotonic() + timeout
    async with aiohttp.ClientSession() as http:
        while pending and time.monotonic() < deadline:
            await asyncio.sleep(2)
            for expr in sorted(pending):
                try:
                    if await query(http, base, expr):
                        pending.discard(expr)
                except aiohttp.ClientConnectionError:
                    break  # prometheus still starting
    return pending
