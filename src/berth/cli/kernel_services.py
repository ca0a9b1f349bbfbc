"""``berth kernel service start|stop``: the services (apps) a kernel's image declares."""

from __future__ import annotations

from collections.abc import Collection, Mapping, Sequence
from typing import Any

import click

from berth.cli import render
from berth.cli.kernel import agent_host, find_kernel
from berth.cli.state import get_state, json_option, run_with_client
from berth.cli.views import service_url
from berth.client import AgentClient

__all__ = ["COMMANDS", "service", "service_lines"]

def service_lines(name: str, result: Mapping[str, Any], ports: Sequence[Mapping[str, Any]],
                  host: str, tls_host_ports: Collection[int] = ()) -> list[str]:
    """What ``service start`` prints: the status, then each host port of the service (its URL
    ``https://`` where the agent serves it over TLS)."""
    lines = [f"{name}: {result.get('status')}"
             + (f" ({result['error']})" if result.get("error") else "")]
    decl = next((p for p in ports if p.get("name") == name), None)
    if decl is None or result.get("status") == "failed":
        return lines
    pairs = zip(decl.get("container_ports") or [], decl.get("host_ports") or [], strict=False)
    for container_port, host_port in pairs:
        url = service_url(decl.get("protocol"), host, host_port, tls_host_ports)
        url = f"  {url}" if url else ""
        lines.append(f"  host port {host_port} -> container port {container_port}{url}")
    return lines


@click.group("service")
def service() -> None:
    """Start or stop a service (app) declared by a kernel's image."""


def _pairs(items: Sequence[str], what: str) -> dict[str, str]:
    out: dict[str, str] = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise click.BadParameter(f"{item!r} is not KEY=VALUE", param_hint=what)
        out[key] = value
    return out


@service.command("start")
@click.argument("kernel_id")
@click.argument("name")
@click.option("--env", "envs", multiple=True, metavar="KEY=VALUE",
              help="Environment for the service, if its definition allows the name "
                   "(e.g. JUPYTER_TOKEN=...). Repeatable.")
@click.option("--arg", "arguments", multiple=True, metavar="KEY=VALUE",
              help="An argument the service definition allows "
                   "(e.g. --ServerApp.base_url=/x/). Repeatable.")
@json_option
@click.pass_context
def service_start(ctx: click.Context, kernel_id: str, name: str, envs: tuple[str, ...],
                  arguments: tuple[str, ...]) -> None:
    """Start service NAME; print its status and host port(s)."""
    state = get_state(ctx)
    opts: dict[str, Any] = {}
    if envs:
        opts["envs"] = _pairs(envs, "--env")
    if arguments:
        opts["arguments"] = _pairs(arguments, "--arg")

    async def go(client: AgentClient) -> tuple[dict[str, Any], dict[str, Any]]:
        result = await client.start_service(kernel_id, name, opts)
        row = await find_kernel(client, kernel_id)
        return result, row

    result, row = run_with_client(state, go)
    ports: list[dict[str, Any]] = list(row.get("service_ports") or [])
    if state.as_json:
        decl = next((p for p in ports if p.get("name") == name), {})
        render.emit_json({**result, "service": name, "host_ports": decl.get("host_ports", [])})
    else:
        for line in service_lines(name, result, ports, agent_host(state.addr),
                                  row.get("tls_host_ports") or ()):
            click.echo(line)
    ctx.exit(1 if result.get("status") == "failed" else 0)


@service.command("stop")
@click.argument("kernel_id")
@click.argument("name")
@click.pass_context
def service_stop(ctx: click.Context, kernel_id: str, name: str) -> None:
    """Stop service NAME."""
    run_with_client(get_state(ctx), lambda c: c.shutdown_service(kernel_id, name))
    click.echo(f"{name}: stopped")


COMMANDS = [service]
