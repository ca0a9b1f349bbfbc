"""``berth kernel top [ID]`` and ``berth agent top``: the latest stats from ``get_status``.

On a terminal the screen refreshes in place like ``top`` (every 2 s, ``--watch SECONDS`` to
change it) until Ctrl-C or ``-n`` refreshes; ``--once``, ``--json`` or output to a pipe print
one frame (with ``--watch``, one frame per refresh, one after the other). How stats read is
``stats_view``'s business.
"""

from __future__ import annotations

import asyncio
import sys
import time
from collections.abc import Callable, Mapping
from typing import Any

import click
from rich.console import Group, RenderableType
from rich.live import Live
from rich.text import Text

from berth.cli import render
from berth.cli.kernel import kernels_of
from berth.cli.state import CliState, get_state, json_option, run_with_client
from berth.cli.stats_view import device_table, kernel_stats_table, metric_table
from berth.cli.units import MISSING, human_duration, to_number
from berth.client import AgentClient
from berth.errors import KernelNotFound

__all__ = ["agent_frame", "agent_top", "kernel_frame", "kernel_top"]

DEFAULT_INTERVAL = 2.0


# ------------------------------------------------------------------ frames

def _find(status: Mapping[str, Any], kernel_id: str) -> dict[str, Any]:
    for row in kernels_of(status):
        if str(row.get("id")) == kernel_id:
            return row
    raise KernelNotFound(kernel_id=kernel_id)


def _stats_json(row: Mapping[str, Any]) -> dict[str, Any]:
    return {"kernel_id": row.get("id"), "state": row.get("state"), "stats": row.get("stats")}


def _headline(status: Mapping[str, Any], now: float | None) -> Text:
    uptime = to_number(status.get("uptime"))
    text = f"agent {status.get('agent_id') or MISSING}"
    if uptime is not None:
        text += f", up {human_duration(uptime)}"
    if now is not None:
        text += time.strftime(", %H:%M:%S", time.localtime(now))
    return Text(text, style="bold")


def kernel_frame(status: Mapping[str, Any], kernel_id: str | None,
                 now: float | None = None) -> RenderableType:
    """Every kernel's line, or one kernel's every metric (KernelNotFound when unknown)."""
    if kernel_id is None:
        return Group(_headline(status, now), "",
                     render.section("Kernels", kernel_stats_table(kernels_of(status))))
    row = _find(status, kernel_id)
    stats = row.get("stats")
    return Group(Text(f"kernel {kernel_id} ({row.get('state')})", style="bold"), "",
                 metric_table(stats) if stats else Text("no stats yet"))


def agent_frame(status: Mapping[str, Any], now: float | None = None) -> RenderableType:
    """The node's metrics, its devices' and its kernels'."""
    node_stats = status.get("node_stats")
    node: Mapping[str, Any] = node_stats if isinstance(node_stats, Mapping) else {}
    parts: list[RenderableType] = [_headline(status, now)]
    if node.get("node"):
        parts += ["", render.section("Node", metric_table(node["node"]))]
    if (devices := device_table(node.get("devices"))) is not None:
        parts += ["", render.section("Devices", devices)]
    parts += ["", render.section("Kernels", kernel_stats_table(kernels_of(status)))]
    return Group(*parts)


# ------------------------------------------------------------------ commands

Frame = Callable[[Mapping[str, Any], float | None], RenderableType]
Json = Callable[[Mapping[str, Any]], Any]


async def _print_frames(client: AgentClient, frame: Frame | None, as_json: Json,
                        watch: float | None, iterations: int | None) -> None:
    """One frame, or one per refresh with ``watch``, printed one after the other."""
    done = 0
    while True:
        status = await client.get_status()
        if frame is None:
            render.emit_json(as_json(status))
        else:
            render.show(frame(status, None))
        done += 1
        if watch is None or (iterations is not None and done >= iterations):
            return
        await asyncio.sleep(watch)


async def _live(client: AgentClient, frame: Frame, interval: float,
                iterations: int | None) -> None:
    """Redraw in place (like ``top``) until Ctrl-C or ``iterations`` refreshes."""
    done = 0
    with Live(console=render.console(), auto_refresh=False, transient=False) as live:
        while True:
            status = await client.get_status()
            live.update(frame(status, time.time()), refresh=True)
            done += 1
            if iterations is not None and done >= iterations:
                return
            await asyncio.sleep(interval)


def on_terminal() -> bool:
    return sys.stdout.isatty()


def _run(state: CliState, frame: Frame, as_json: Json, watch: float | None,
         iterations: int | None, once: bool) -> None:
    live = not (once or state.as_json) and on_terminal()
    try:
        if live:
            run_with_client(state, lambda c: _live(c, frame, watch or DEFAULT_INTERVAL,
                                                   iterations))
        else:
            run_with_client(state, lambda c: _print_frames(
                c, None if state.as_json else frame, as_json, None if once else watch,
                iterations))
    except KeyboardInterrupt:  # Ctrl-C ends the refreshing
        click.echo("")


def _watch_options(func: Callable[..., Any]) -> Callable[..., Any]:
    func = click.option("--once", is_flag=True,
                        help="Print one frame and exit (also when not on a terminal)")(func)
    func = click.option("-n", "--iterations", type=click.IntRange(min=1), default=None,
                        help="Stop after N refreshes")(func)
    return click.option("--watch", type=click.FloatRange(min=0.1), default=None,
                        metavar="SECONDS",
                        help=f"Refresh every SECONDS (on a terminal: {DEFAULT_INTERVAL:g}); "
                             "when not on a terminal, print a frame per refresh")(func)


@click.command("top")
@click.argument("kernel_id", required=False)
@_watch_options
@json_option
@click.pass_context
def kernel_top(ctx: click.Context, kernel_id: str | None, watch: float | None,
               iterations: int | None, once: bool) -> None:
    """Latest stats of every kernel, or of one kernel in detail, refreshed in place."""
    state = get_state(ctx)

    def as_json(status: Mapping[str, Any]) -> Any:
        if kernel_id is not None:
            return {**_stats_json(_find(status, kernel_id)), "kernel_id": kernel_id}
        return [_stats_json(r) for r in kernels_of(status)]

    _run(state, lambda s, now: kernel_frame(s, kernel_id, now), as_json, watch, iterations,
         once)


@click.command("top")
@_watch_options
@json_option
@click.pass_context
def agent_top(ctx: click.Context, watch: float | None, iterations: int | None,
              once: bool) -> None:
    """Latest stats of the node, its devices and its kernels, refreshed in place."""
    state = get_state(ctx)

    def as_json(status: Mapping[str, Any]) -> Any:
        return {"agent_id": status.get("agent_id"), "node_stats": status.get("node_stats"),
                "kernels": [_stats_json(r) for r in kernels_of(status)]}

    _run(state, agent_frame, as_json, watch, iterations, once)
