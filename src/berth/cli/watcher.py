"""``berth watcher``: run the watcher daemon that supervises the agent process."""

from __future__ import annotations

import asyncio
import logging
import shlex
import signal
import sys
from pathlib import Path
from typing import TYPE_CHECKING

import click

from berth.errors import ConfigError

if TYPE_CHECKING:  # the daemon's modules load when the watcher runs, not with every command
    from berth.watcher import AgentSupervisor, WatcherConfig

log = logging.getLogger(__name__)


def _split_addr(addr: str) -> tuple[str, int]:
    host, _, port = addr.rpartition(":")
    return host or "0.0.0.0", int(port)


async def run_watcher(config: WatcherConfig, supervisor: AgentSupervisor,
                      agent_id: str | None = None) -> None:
    """Serve until SIGINT/SIGTERM; with ``agent_id`` the status counts its kernel containers."""
    from berth.backend import DockerBackend
    from berth.watcher import WatcherServer, docker_kernel_counter

    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    backend = DockerBackend() if agent_id else None
    counter = docker_kernel_counter(backend, agent_id) if backend and agent_id else None
    server = WatcherServer(config, supervisor, counter)
    try:
        await server.startup()
        await server.serve(stop)
    finally:
        await server.shutdown()
        if backend is not None:
            await backend.close()


@click.command("watcher")
@click.option("--service-addr", default="0.0.0.0:6009", show_default=True,
              help="host:port to listen on")
@click.option("--token-file", type=click.Path(path_type=Path), required=True,
              help="file holding the X-BackendAI-Watcher-Token value (mode 0600)")
@click.option("-f", "--config", "config_path", default=None,
              help="agent.toml passed to the default agent command")
@click.option("--agent-cmd", default=None, help="agent command line (default: berth start-server)")
@click.option("--ssl-cert", type=click.Path(path_type=Path), default=None)
@click.option("--ssl-key", type=click.Path(path_type=Path), default=None)
@click.option("--stop-timeout", type=float, default=30.0, show_default=True)
@click.option("--soft-reset-signal/--soft-reset-restart", default=True, show_default=True,
              help="soft reset sends SIGHUP, or restarts the agent")
@click.option("--no-autostart", is_flag=True, help="do not start the agent with the watcher")
@click.option("--keep-agent-on-exit", is_flag=True, help="leave the agent running at exit")
def watcher_group(service_addr: str, token_file: Path, config_path: str | None,
                  agent_cmd: str | None, ssl_cert: Path | None, ssl_key: Path | None,
                  stop_timeout: float, soft_reset_signal: bool, no_autostart: bool,
                  keep_agent_on_exit: bool) -> None:
    """Supervise the agent and serve the watcher API (token-protected)."""
    from berth.config import load_config
    from berth.watcher import (
        AgentSupervisor,
        WatcherConfig,
        default_agent_command,
        load_token,
    )

    try:
        token = load_token(token_file)
        agent_id = load_config(config_path).agent.id
    except ConfigError as exc:
        raise click.ClickException(str(exc)) from exc
    host, port = _split_addr(service_addr)
    command = shlex.split(agent_cmd) if agent_cmd else default_agent_command(
        config_path, sys.executable)
    config = WatcherConfig(host, port, token, ssl_cert, ssl_key, autostart=not no_autostart,
                           stop_agent_on_exit=not keep_agent_on_exit)
    supervisor = AgentSupervisor(command, stop_timeout=stop_timeout,
                                 soft_reset_signal=soft_reset_signal)
    asyncio.run(run_watcher(config, supervisor, agent_id))
