"""The internal HTTP server on an ephemeral loopback port (our own server, no real service)."""

from __future__ import annotations

import aiohttp
import pytest

from berth.errors import ConfigError
from berth.telemetry.metrics import BerthMetrics
from berth.telemetry.web import InternalServer, parse_addr


def test_parse_addr() -> None:
    assert parse_addr("127.0.0.1:6003") == ("127.0.0.1", 6003)
    assert parse_addr("[::1]:6003") == ("::1", 6003)
    assert parse_addr(":6003") == ("0.0.0.0", 6003)
    for bad in ("6003", "host:", "h:99999"):
        with pytest.raises(ConfigError):
            parse_addr(bad)


async def test_endpoints_and_readiness() -> None:
    reasons: list[str] = ["docker: not reachable"]

    async def readiness() -> list[str]:
        return list(reasons)

    async def liveness() -> list[str]:
        raise RuntimeError("probe crashed")

    metrics = BerthMetrics("agent-1")
    metrics.observe_rpc("ping", 0.01)
    server = InternalServer("127.0.0.1:0", metrics, readiness=readiness, liveness=liveness,
                            info={"version": "0.1.0"})
    await server.start()
    base = f"http://127.0.0.1:{server.port}"
    try:
        async with aiohttp.ClientSession() as http:
            async with http.get(f"{base}/metrics") as r:
                assert r.status == 200
                assert r.headers["Content-Type"].startswith("text/plain; version=0.0.4")
                assert 'backendai_rpc_requests_total{method="ping"} 1.0' in await r.text()
            async with http.get(f"{base}/health") as r:
                body = await r.json()
                assert r.status == 200 and body["status"] == "degraded"
                assert body["version"] == "0.1.0" and body["reasons"] == reasons
            async with http.get(f"{base}/readyz") as r:
                assert r.status == 503 and (await r.json())["reasons"] == reasons
            reasons.clear()
            async with http.get(f"{base}/readyz") as r:
                assert r.status == 200
            async with http.get(f"{base}/livez") as r:
                assert r.status == 503 and "probe crashed" in (await r.json())["reasons"][0]
    finally:
        await server.close()


async def test_start_fails_on_taken_port() -> None:
    first = InternalServer("127.0.0.1:0", BerthMetrics("a"))
    await first.start()
    try:
        second = InternalServer(f"127.0.0.1:{first.port}", BerthMetrics("b"))
        with pytest.raises(OSError):
            await second.start()
    finally:
        await first.close()
