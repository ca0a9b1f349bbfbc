"""``berth start-server``: load the config, start the agent, serve RPC until SIGTERM.

uvicorn's shape: signal handlers only set a flag; ``startup()`` returns when the node is
ready; shutdown stops listening and leaves kernels running; one summary line at exit.
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import sys
import time
from pathlib import Path

from berth import logctx
from berth.config import AgentConfig, load_config
from berth.daemon.agent import Agent
from berth.daemon.facade import AgentFacade
from berth.errors import BerthError, ConfigError
from berth.rpc import HandlerRegistry, RPCServer, server_security

__all__ = ["configure_logging", "main", "run"]

log = logging.getLogger(__name__)


def configure_logging(config: AgentConfig) -> None:
    handlers: list[logging.Handler] = [logging.StreamHandler(sys.stderr)]
    if config.logging.file is not None:
        config.logging.file.parent.mkdir(parents=True, exist_ok=True)
        handlers.append(logging.FileHandler(config.logging.file))
    fmt = "%(asctime)s %(levelname)s %(name)s [%(process)d] %(message)s"
    formatter: logging.Formatter = logging.Formatter(fmt)
    if config.logging.format == "json":
        from berth.telemetry import JSONFormatter

        formatter = JSONFormatter()
    for handler in handlers:
        handler.setFormatter(formatter)
    if config.logging.loki_endpoint:
        from berth.telemetry import JSONFormatter, LokiHandler

        # Batched from its own thread with a bounded queue: logging never blocks the agent.
        loki = LokiHandler(config.logging.loki_endpoint, config.agent.id)
        loki.setFormatter(JSONFormatter())
        handlers.append(loki)
    for handler in handlers:  # every record carries the kernel/session/method it is about
        logctx.install(handler)
    logging.basicConfig(level=config.logging.level, handlers=handlers, force=True)


def build_rpc_server(agent: Agent) -> RPCServer:
    a = agent.config.agent
    security = None
    if a.rpc_auth_agent_keypair is not None:
        security = server_security(a.rpc_auth_agent_keypair, a.rpc_auth_manager_public_key)
    else:
        log.warning("RPC runs in PLAIN mode (agent.rpc-allow-plain = true): any client that "
                    "reaches %s can control this node", a.rpc_listen_addr)
    return RPCServer(HandlerRegistry(AgentFacade.of(agent)), a.rpc_listen_addr, security=security,
                     plain=security is None, max_body_size=a.rpc_max_body_size,
                     request_timeout=a.rpc_request_timeout,
                     on_request=agent.parts.telemetry.metrics.observe_rpc)


async def run(config: AgentConfig) -> int:
    started = time.monotonic()
    agent = Agent(config)
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, agent.request_stop)
    try:
        await agent.startup()
        rpc = build_rpc_server(agent)
        await rpc.start()
        _write_pid(config)
        log.info("agent %s ready: RPC on %s (%d kernels)", agent.agent_id, rpc.endpoint,
                 len(agent.registry))
        try:
            await agent.serve()
        finally:
            await rpc.close()
    finally:
        await agent.shutdown()
        _remove_pid(config)
    log.info("agent %s exited after %.1fs; %d kernels keep running", agent.agent_id,
             time.monotonic() - started, len(agent.registry))
    return 0


def _write_pid(config: AgentConfig) -> None:
    if config.agent.pid_file is not None:
        config.agent.pid_file.parent.mkdir(parents=True, exist_ok=True)
        config.agent.pid_file.write_text(f"{os.getpid()}\n")


def _remove_pid(config: AgentConfig) -> None:
    if config.agent.pid_file is not None:
        config.agent.pid_file.unlink(missing_ok=True)


def main(config_path: str | Path | None = None) -> int:
    try:
        config = load_config(config_path)
    except ConfigError as exc:
        print(f"berth: configuration error: {exc}", file=sys.stderr)
        return 2
    configure_logging(config)
    try:
        return asyncio.run(run(config))
    except BerthError as exc:
        log.error("agent failed: %s", exc)
        return 1
