"""The agent's internal HTTP server (default :6003): /metrics, /health, /livez, /readyz.

uvicorn's shape: `await server.start()` returns once the socket is bound (`server.port` then
holds the real port, also for port 0); `await server.close()` stops it.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

from aiohttp import web
from prometheus_client.exposition import CONTENT_TYPE_PLAIN_0_0_4

from berth.errors import ConfigError
from berth.telemetry.metrics import BerthMetrics

log = logging.getLogger(__name__)

# A check returns the reasons it fails; an empty list means healthy.
Check = Callable[[], Awaitable[list[str]]]


async def _always_ok() -> list[str]:
    return []


def parse_addr(addr: str) -> tuple[str, int]:
    """`host:port`, `[v6]:port` or `:port` (all interfaces)."""
    host, sep, port = addr.rpartition(":")
    if not sep or not port.isdigit() or int(port) > 65535:
        raise ConfigError(f"not a host:port address: {addr!r}", key_path="agent.internal-addr")
    return host.strip("[]") or "0.0.0.0", int(port)


class InternalServer:
    def __init__(
        self,
        addr: str,
        metrics: BerthMetrics,
        *,
        readiness: Check = _always_ok,
        liveness: Check = _always_ok,
        info: Mapping[str, Any] | None = None,
    ) -> None:
        self._host, self._port = parse_addr(addr)
        self._metrics = metrics
        self._readiness = readiness
        self._liveness = liveness
        self._info = dict(info or {})
        self._runner: web.AppRunner | None = None

    @property
    def port(self) -> int:
        return self._port

    def _app(self) -> web.Application:
        app = web.Application()
        app.router.add_get("/metrics", self._get_metrics)
        app.router.add_get("/health", self._get_health)
        app.router.add_get("/livez", self._get_livez)
        app.router.add_get("/readyz", self._get_readyz)
        return app

    async def start(self) -> None:
        runner = web.AppRunner(self._app(), access_log=None)
        await runner.setup()
        site = web.TCPSite(runner, self._host, self._port)
        try:
            await site.start()
        except OSError:
            await runner.cleanup()
            raise
        self._runner = runner
        self._port = runner.addresses[0][1]
        log.info("internal HTTP server listening on %s:%d", self._host, self._port)

    async def close(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    async def _get_metrics(self, request: web.Request) -> web.StreamResponse:
        """Streamed: each piece is sent as it is written, so a scrape of a node with hundreds
        of kernels holds one piece, not the whole text (~7 MB at 500 kernels)."""
        response = web.StreamResponse(headers={"Content-Type": CONTENT_TYPE_PLAIN_0_0_4})
        await response.prepare(request)
        for chunk in self._metrics.exposition_chunks():
            await response.write(chunk)
        await response.write_eof()
        return response

    async def _reasons(self, check: Check) -> list[str]:
        try:
            return list(await check())
        except Exception as exc:  # noqa: BLE001 - a crashing check is a failing check
            return [f"check raised {exc!r}"]

    async def _get_health(self, request: web.Request) -> web.Response:
        reasons = await self._reasons(self._readiness)
        body = {**self._info, "component": "agent",
                "status": "degraded" if reasons else "ok", "reasons": reasons}
        return web.json_response(body)

    async def _probe(self, check: Check) -> web.Response:
        reasons = await self._reasons(check)
        return web.json_response({"ok": not reasons, "reasons": reasons},
                                 status=503 if reasons else 200)

    async def _get_livez(self, request: web.Request) -> web.Response:
        return await self._probe(self._liveness)

    async def _get_readyz(self, request: web.Request) -> web.Response:
        return await self._probe(self._readiness)
