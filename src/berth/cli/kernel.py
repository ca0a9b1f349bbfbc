"""``berth kernel …``: drive kernels over RPC as a Manager would."""

from __future__ import annotations

import platform
import uuid
from collections.abc import Callable, Mapping
from typing import Any, TypeVar

import click

from berth.cli import render, views
from berth.cli.spec import (
    KernelRequest,
    cluster_info,
    creation_config,
    parse_env,
    parse_mount,
    parse_size,
)
from berth.cli.state import get_state, json_option, run_with_client
from berth.cli.views import service_url
from berth.client import AgentClient
from berth.errors import InvalidArgument, KernelNotFound


def kernels_of(status: Mapping[str, Any]) -> list[dict[str, Any]]:
    """The kernel rows of a ``get_status`` answer (a list, or a map keyed by kernel id)."""
    raw = status.get("kernels", [])
    items = [{"id": k, **v} for k, v in raw.items()] if isinstance(raw, Mapping) else list(raw)
    rows = []
    for item in items:
        row = dict(item)
        row.setdefault("id", row.get("kernel_id"))
        image = row.get("image")
        row["image"] = image.get("canonical") if isinstance(image, Mapping) else image
        row["container"] = str(row.get("container_id") or "")[:12] or None
        row["slots"] = row.get("slots", row.get("resource_slots"))
        row["ports"] = row.get("ports", row.get("service_ports"))
        rows.append(row)
    return rows


def service_urls(row: Mapping[str, Any], host: str) -> dict[str, list[str]]:
    """``{service name: [url, ...]}`` for a kernel row of ``get_status``."""
    tls = set(row.get("tls_host_ports") or ())
    out: dict[str, list[str]] = {}
    for decl in row.get("service_ports") or []:
        urls = [u for hp in decl.get("host_ports") or []
                if (u := service_url(decl.get("protocol"), host, hp, tls)) is not None]
        if urls:
            out[str(decl.get("name"))] = urls
    return out


def agent_host(addr: str) -> str:
    """The host part of the agent's RPC address (where its host ports are published)."""
    host = addr.split("://", 1)[-1].rsplit(":", 1)[0].strip("[]")
    return "127.0.0.1" if host in ("", "*", "0.0.0.0") else host


async def find_kernel(client: AgentClient, kernel_id: str) -> dict[str, Any]:
    for row in kernels_of(await client.get_status()):
        if str(row["id"]) == kernel_id:
            return row
    raise KernelNotFound(kernel_id=kernel_id)


@click.group()
def kernel() -> None:
    """Create, list, inspect, restart and remove kernels."""


def kernel_request(image: str, cpu: str, mem: str, shmem: str | None,
                   mounts: tuple[str, ...], envs: tuple[str, ...], ports: tuple[int, ...],
                   session_id: str | None, kernel_id: str | None) -> KernelRequest:
    try:
        return KernelRequest(
            session_id=session_id or str(uuid.uuid4()), kernel_id=kernel_id or str(uuid.uuid4()),
            image=image, cpu=cpu, mem=parse_size(mem, "mem"),
            shmem=parse_size(shmem, "shmem") if shmem else None,
            mounts=[parse_mount(m) for m in mounts], environ=dict(parse_env(e) for e in envs),
            ports=list(ports), architecture=platform.machine() or "x86_64")
    except InvalidArgument as exc:
        raise click.BadParameter(str(exc)) from None


F = TypeVar("F", bound=Callable[..., Any])


def kernel_shape_options(command: F) -> F:
    """The options that shape a new kernel (image, slots, mounts, environment), shared by
    ``kernel create`` and ``kernel run``."""
    for option in reversed((
        click.option("--image", required=True,
                     help="Image canonical name, e.g. berth/python:3.11"),
        click.option("--cpu", default="1", show_default=True, help="CPU cores"),
        click.option("--mem", default="1g", show_default=True, help="Memory (e.g. 512m, 2g)"),
        click.option("--shmem", default=None, help="/dev/shm size (e.g. 64m)"),
        click.option("--mount", "mounts", multiple=True, metavar="SRC:NAME:MODE",
                     help="Host dir SRC at /home/work/NAME, MODE ro|rw|wd (repeatable)"),
        click.option("--env", "envs", multiple=True, metavar="K=V",
                     help="Environment (repeatable)"),
    )):
        command = option(command)
    return command


@kernel.command()
@kernel_shape_options
@click.option("--port", "ports", multiple=True, type=click.IntRange(1, 65535),
              help="Container port to pre-open (repeatable)")
@click.option("--session-id", default=None, help="Session id (default: new UUID)")
@click.option("--kernel-id", default=None, help="Kernel id (default: new UUID)")
@json_option
@click.pass_context
def create(ctx: click.Context, image: str, cpu: str, mem: str, shmem: str | None,
           mounts: tuple[str, ...], envs: tuple[str, ...], ports: tuple[int, ...],
           session_id: str | None, kernel_id: str | None) -> None:
    """Create one kernel (create_kernels with a single config)."""
    state = get_state(ctx)
    req = kernel_request(image, cpu, mem, shmem, mounts, envs, ports, session_id, kernel_id)
    results = run_with_client(state, lambda c: c.create_kernels(
        req.session_id, [req.kernel_id], [creation_config(req)], cluster_info(), {}))
    if state.as_json:
        render.emit_json(results)
        return
    host = agent_host(state.addr)
    render.show(*(views.kernel_reply(result, host, req.session_id) for result in results))


@kernel.command("ls")
@json_option
@click.pass_context
def ls(ctx: click.Context) -> None:
    """List the agent's kernels."""
    state = get_state(ctx)
    rows = kernels_of(run_with_client(state, lambda c: c.get_status()))
    if state.as_json:
        render.emit_json(rows)
    else:
        render.show(views.kernel_list(rows))


@kernel.command()
@click.argument("kernel_id")
@json_option
@click.pass_context
def show(ctx: click.Context, kernel_id: str) -> None:
    """Show one kernel (exit 3 when unknown)."""
    state = get_state(ctx)
    row = run_with_client(state, lambda c: find_kernel(c, kernel_id))
    if urls := service_urls(row, agent_host(state.addr)):
        row["service_urls"] = urls
    if state.as_json:
        render.emit_json(row)
    else:
        render.show(views.kernel_detail(row, agent_host(state.addr)))


@kernel.command()
@click.argument("kernel_id")
@json_option
@click.pass_context
def restart(ctx: click.Context, kernel_id: str) -> None:
    """Restart a kernel in place (same scratch, mounts and slots)."""
    state = get_state(ctx)

    async def go(client: AgentClient) -> dict[str, Any]:
        row = await find_kernel(client, kernel_id)
        image = row.get("image")
        return await client.restart_kernel(str(row.get("session_id", "")), kernel_id,
                                           {"canonical": image}, {})

    result = run_with_client(state, go)
    if state.as_json:
        render.emit_json(result)
    else:
        click.echo(f"kernel {kernel_id} restarted")
        render.show(views.kernel_reply(result, agent_host(state.addr)))


@kernel.command()
@click.argument("kernel_id")
@click.option("--reason", default="user-requested", show_default=True)
@json_option
@click.pass_context
def rm(ctx: click.Context, kernel_id: str, reason: str) -> None:
    """Destroy a kernel."""
    state = get_state(ctx)

    async def go(client: AgentClient) -> Any:
        row = await find_kernel(client, kernel_id)
        return await client.destroy_kernel(kernel_id, str(row.get("session_id", "")), reason)

    result = run_with_client(state, go)
    if state.as_json:
        render.emit_json({"kernel_id": kernel_id, "destroyed": True, "result": result})
    else:
        click.echo(f"kernel {kernel_id} destroyed")


@kernel.command()
@click.argument("kernel_id")
@json_option
@click.pass_context
def logs(ctx: click.Context, kernel_id: str) -> None:
    """Print a kernel's container logs."""
    state = get_state(ctx)
    result = run_with_client(state, lambda c: c.get_logs(kernel_id))
    if state.as_json:
        render.emit_json(result)
    else:
        click.echo(str(result.get("logs", "")), nl=False)
