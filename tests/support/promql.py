"""PromQL against a test Prometheus over HTTP, and the Grafana dashboard's queries."""

from __future__ import annotations

import asyncio
import json
import time
from pathlib import Path

import aiohttp

DASHBOARD = Path(__file__).resolve().parents[2] / "deploy/grafana/berth-dashboard.json"


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
