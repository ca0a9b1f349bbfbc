"""``berth kernel top [ID]`` and ``berth agent top``: the latest stats from ``get_status``.

Each kernel entry of ``get_status`` may carry ``stats`` (metric key → Backend.AI
``MetricValue``: every number a string, ``unit_hint`` saying what it measures) and the answer
a top-level ``node_stats`` (``{"node": {key: MetricValue}, "devices": {key: {dev: ...}}}``).
Anything missing shows as ``-``. One snapshot by default; ``--watch SECONDS`` refreshes.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Mapping
from decimal import ROUND_HALF_UP, Decimal, InvalidOperation
from typing import Any

import click

from berth.cli import render
from berth.cli.kernel import kernels_of
from berth.cli.state import CliState, get_state, json_option, run_with_client
from berth.client import AgentClient
from berth.errors import KernelNotFound

__all__ = ["agent_top", "format_metric", "kernel_rows", "kernel_top", "metric_rows"]

MISSING = "-"
_BINARY = ("B", "KiB", "MiB", "GiB", "TiB", "PiB")

KERNEL_COLUMNS = [
    ("kernel", "KERNEL"), ("state", "STATE"), ("cpu_util", "CPU%"), ("cpu_used", "CPU TIME"),
    ("mem", "MEM"), ("mem_pct", "MEM%"), ("io_read", "READ/s"), ("io_write", "WRITE/s"),
    ("net_rx", "RX/s"), ("net_tx", "TX/s"), ("pids", "PIDS"),
]
METRIC_COLUMNS = [("metric", "METRIC"), ("current", "CURRENT"), ("capacity", "CAPACITY"),
                  ("pct", "PCT")]
DEVICE_COLUMNS = [("metric", "METRIC"), ("device", "DEVICE"), ("current", "CURRENT"),
                  ("capacity", "CAPACITY"), ("pct", "PCT")]


def _number(value: Any) -> Decimal | None:
    if value is None or isinstance(value, bool):
        return None
    try:
        number = Decimal(str(value))
    except InvalidOperation:
        return None
    return number if number.is_finite() else None


def human_bytes(value: Decimal) -> str:
    size, unit = float(value), 0
    while abs(size) >= 1024 and unit < len(_BINARY) - 1:
        size, unit = size / 1024, unit + 1
    return f"{int(size)} B" if unit == 0 else f"{size:.1f} {_BINARY[unit]}"


def _fixed(value: Decimal, places: str) -> str:
    return str(value.quantize(Decimal(places), ROUND_HALF_UP))


_FORMATS: dict[str, Callable[[Decimal], str]] = {
    "bytes": human_bytes,
    "bps": lambda v: f"{human_bytes(v)}/s",
    "percent": lambda v: f"{_fixed(v, '0.1')}%",
    "msec": lambda v: f"{_fixed(v / 1000, '0.01')}s",
    "count": lambda v: f"{int(v)}",
}


def format_value(value: Any, unit_hint: str | None) -> str:
    """One MetricValue number (a string on the wire) in the unit its hint names."""
    number = _number(value)
    if number is None:
        return MISSING if value is None else str(value)
    fmt = _FORMATS.get(unit_hint or "")
    return fmt(number) if fmt else format(number.normalize(), "f")


def format_metric(metric: Any, part: str = "current") -> str:
    """``part`` of a MetricValue (``current``, ``capacity``, ``pct``, ``stats.rate``…)."""
    if not isinstance(metric, Mapping) or metric.get(part) is None:
        return MISSING
    if part == "pct":  # already rounded by the agent: shown as sent
        return f"{metric[part]}%" if _number(metric[part]) is not None else str(metric[part])
    unit = metric.get("unit_hint")
    if part == "stats.rate" and unit == "bytes":
        unit = "bps"
    return format_value(metric[part], unit)


def _mem_cell(mem: Any) -> str:
    current = format_metric(mem)
    capacity = format_metric(mem, "capacity")
    return current if capacity == MISSING else f"{current} / {capacity}"


def kernel_row(kernel: Mapping[str, Any]) -> dict[str, str]:
    stats = kernel.get("stats")
    m: Mapping[str, Any] = stats if isinstance(stats, Mapping) else {}
    return {
        "kernel": str(kernel.get("id") or kernel.get("kernel_id") or MISSING),
        "state": str(kernel.get("state") or MISSING),
        "cpu_util": format_metric(m.get("cpu_util")),
        "cpu_used": format_metric(m.get("cpu_used")),
        "mem": _mem_cell(m.get("mem")) if "mem" in m else MISSING,
        "mem_pct": format_metric(m.get("mem"), "pct"),
        "io_read": format_metric(m.get("io_read"), "stats.rate"),
        "io_write": format_metric(m.get("io_write"), "stats.rate"),
        "net_rx": format_metric(m.get("net_rx")),
        "net_tx": format_metric(m.get("net_tx")),
        "pids": format_metric(m.get("pids")),
    }


def kernel_rows(status: Mapping[str, Any]) -> list[dict[str, str]]:
    return [kernel_row(k) for k in kernels_of(status)]


def metric_rows(metrics: Any) -> list[dict[str, str]]:
    """METRIC / CURRENT / CAPACITY / PCT rows of a {key: MetricValue} map, sorted by key."""
    if not isinstance(metrics, Mapping):
        return []
    return [{"metric": str(key), "current": format_metric(value),
             "capacity": format_metric(value, "capacity"), "pct": format_metric(value, "pct")}
            for key, value in sorted(metrics.items())]


def device_rows(devices: Any) -> list[dict[str, str]]:
    if not isinstance(devices, Mapping):
        return []
    rows = []
    for key, per_device in sorted(devices.items()):
        for row in metric_rows(per_device if isinstance(per_device, Mapping) else {}):
            rows.append({"metric": str(key), "device": row.pop("metric"), **row})
    return rows


# ------------------------------------------------------------------ commands

def _find(status: Mapping[str, Any], kernel_id: str) -> dict[str, Any]:
    for row in kernels_of(status):
        if str(row.get("id")) == kernel_id:
            return row
    raise KernelNotFound(kernel_id=kernel_id)


def _show_kernels(status: Mapping[str, Any], kernel_id: str | None, as_json: bool) -> None:
    if kernel_id is not None:
        row = _find(status, kernel_id)
        if as_json:
            render.emit_json({"kernel_id": kernel_id, "state": row.get("state"),
                              "stats": row.get("stats")})
        else:
            render.table(metric_rows(row.get("stats")), METRIC_COLUMNS,
                         title=f"kernel {kernel_id} ({row.get('state')})")
        return
    if as_json:
        render.emit_json([{"kernel_id": r.get("id"), "state": r.get("state"),
                           "stats": r.get("stats")} for r in kernels_of(status)])
    else:
        render.table(kernel_rows(status), KERNEL_COLUMNS, title="kernels")


def _show_agent(status: Mapping[str, Any], as_json: bool) -> None:
    node_stats = status.get("node_stats")
    if as_json:
        render.emit_json({"agent_id": status.get("agent_id"), "node_stats": node_stats,
                          "kernels": [{"kernel_id": r.get("id"), "state": r.get("state"),
                                       "stats": r.get("stats")} for r in kernels_of(status)]})
        return
    node: Mapping[str, Any] = node_stats if isinstance(node_stats, Mapping) else {}
    title = f"agent {status.get('agent_id') or MISSING} (uptime {status.get('uptime', '-')}s)"
    render.table(metric_rows(node.get("node")), METRIC_COLUMNS, title=title)
    render.table(device_rows(node.get("devices")), DEVICE_COLUMNS, title="devices")
    render.table(kernel_rows(status), KERNEL_COLUMNS, title="kernels")


async def _loop(client: AgentClient, show: Callable[[Mapping[str, Any]], None],
                watch: float | None, iterations: int | None) -> None:
    done = 0
    while True:
        status = await client.get_status()
        if watch is not None:
            click.clear()
        show(status)
        done += 1
        if watch is None or (iterations is not None and done >= iterations):
            return
        await asyncio.sleep(watch)


def _run(state: CliState, show: Callable[[Mapping[str, Any]], None], watch: float | None,
         iterations: int | None) -> None:
    try:
        run_with_client(state, lambda c: _loop(c, show, watch, iterations))
    except KeyboardInterrupt:  # Ctrl-C ends --watch
        click.echo("")


def _watch_options(func: Callable[..., Any]) -> Callable[..., Any]:
    func = click.option("-n", "--iterations", type=click.IntRange(min=1), default=None,
                        help="With --watch: stop after N refreshes")(func)
    return click.option("--watch", type=click.FloatRange(min=0.1), default=None,
                        metavar="SECONDS", help="Refresh every SECONDS until Ctrl-C")(func)


@click.command("top")
@click.argument("kernel_id", required=False)
@_watch_options
@json_option
@click.pass_context
def kernel_top(ctx: click.Context, kernel_id: str | None, watch: float | None,
               iterations: int | None) -> None:
    """Latest stats of every kernel, or of one kernel in detail."""
    state = get_state(ctx)
    _run(state, lambda s: _show_kernels(s, kernel_id, state.as_json), watch, iterations)


@click.command("top")
@_watch_options
@json_option
@click.pass_context
def agent_top(ctx: click.Context, watch: float | None, iterations: int | None) -> None:
    """Latest stats of the node, its devices and its kernels."""
    state = get_state(ctx)
    _run(state, lambda s: _show_agent(s, state.as_json), watch, iterations)
