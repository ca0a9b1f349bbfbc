"""Runs the watcher: HTTP(S) listener + the supervised agent, until asked to stop."""

from __future__ import annotations

import asyncio
import logging
import ssl
from dataclasses import dataclass
from pathlib import Path

from aiohttp import web

from berth.errors import ConfigError
from berth.watcher.app import make_app
from berth.watcher.kernels import KernelCounter
from berth.watcher.supervisor import AgentSupervisor

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class WatcherConfig:
    host: str
    port: int
    token: str
    ssl_cert: Path | None = None
    ssl_key: Path | None = None
    autostart: bool = True
    stop_agent_on_exit: bool = True


def ssl_context(cert: Path | None, key: Path | None) -> ssl.SSLContext | None:
    if cert is None and key is None:
        return None
    if cert is None or key is None:
        raise ConfigError("TLS needs both ssl-cert and ssl-key", key_path="watcher.ssl-cert")
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ctx.load_cert_chain(str(cert), str(key))
    return ctx


class WatcherServer:
    """``await startup()`` (returns when listening) → ``await serve(stop)`` → ``shutdown()``."""

    def __init__(self, config: WatcherConfig, supervisor: AgentSupervisor,
                 kernels: KernelCounter | None = None) -> None:
        self.config = config
        self.supervisor = supervisor
        self._runner = web.AppRunner(make_app(supervisor, config.token, kernels),
                                     access_log=None)

    async def startup(self) -> None:
        ctx = ssl_context(self.config.ssl_cert, self.config.ssl_key)
        await self._runner.setup()
        site = web.TCPSite(self._runner, self.config.host, self.config.port, ssl_context=ctx)
        await site.start()
        server = site._server
        sockets = getattr(server, "sockets", None) or []
        self.bound_port = sockets[0].getsockname()[1] if sockets else self.config.port
        log.info("watcher listening on %s:%s (%s)", self.config.host, self.bound_port,
                 "https" if ctx else "http")
        if self.config.autostart:
            await self.supervisor.start()

    async def serve(self, stop: asyncio.Event) -> None:
        await stop.wait()

    async def shutdown(self) -> None:
        await self._runner.cleanup()
        if self.config.stop_agent_on_exit:
            await self.supervisor.stop()
        log.info("watcher stopped (agent %s)", self.supervisor.status.value)
