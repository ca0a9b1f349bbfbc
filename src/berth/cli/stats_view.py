"""Stats as ``get_status`` carries them, turned into screen parts (``top``, ``agent status``,
``kernel show``).

Each kernel entry may carry ``stats`` (metric key → Backend.AI ``MetricValue``: every number a
string, ``unit_hint`` saying what it measures, ``stats.*`` the window's avg/max/rate) and the
answer a top-level ``node_stats`` (``{"node": {key: MetricValue}, "devices": {key: {dev:
MetricValue}}}``). Anything missing shows as ``-``. CPU utilisation is a percentage of one
core (``200%`` = two cores busy), so its capacity is shown in cores.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from berth.cli import render
from berth.cli.render import Column, FitTable
from berth.cli.units import (
    MISSING,
    human_bytes,
    human_cores,
    human_duration,
    human_number,
    human_percent,
    human_rate,
    to_number,
)

__all__ = [
    "KERNEL_COLUMNS",
    "device_rows",
    "device_table",
    "format_metric",
    "format_value",
    "kernel_row",
    "kernel_stats_table",
    "metric_rows",
    "metric_table",
]

_FORMATS: dict[str, Callable[[float], str]] = {
    "bytes": human_bytes,
    "bps": human_rate,
    "percent": human_percent,
    "msec": lambda v: human_duration(v / 1000),
    "count": lambda v: str(round(v)),
}

KERNEL_COLUMNS = [
    Column("kernel", "KERNEL", no_wrap=True), Column("state", "STATE"),
    Column("cpu_util", "CPU%", right=True), Column("mem", "MEM", right=True),
    Column("mem_pct", "MEM%", 1, right=True), Column("pids", "PIDS", 2, right=True),
    Column("cpu_used", "CPU TIME", 3, right=True),
    Column("io_read", "READ/s", 4, right=True), Column("io_write", "WRITE/s", 4, right=True),
    Column("net_rx", "RX/s", 5, right=True), Column("net_tx", "TX/s", 5, right=True),
]
METRIC_COLUMNS = [
    Column("metric", "METRIC", no_wrap=True), Column("current", "CURRENT", right=True),
    Column("capacity", "CAPACITY", right=True), Column("pct", "USE%", right=True),
    Column("rate", "RATE", 1, right=True), Column("avg", "AVG", 2, right=True),
    Column("max", "MAX", 2, right=True),
]
DEVICE_COLUMNS = [
    Column("metric", "METRIC", no_wrap=True), Column("device", "DEVICE"),
    Column("current", "CURRENT", right=True), Column("capacity", "CAPACITY", right=True),
    Column("pct", "USE%", right=True),
]


def format_value(value: Any, unit_hint: str | None) -> str:
    """One MetricValue number (a string on the wire) in the unit its hint names."""
    number = to_number(value)
    if number is None:
        return MISSING if value is None else str(value)
    fmt = _FORMATS.get(unit_hint or "")
    return fmt(number) if fmt else human_number(number)


def format_metric(metric: Any, part: str = "current", key: str = "") -> str:
    """``part`` of a MetricValue (``current``, ``capacity``, ``pct``, ``stats.rate``…) of the
    metric named ``key``."""
    if not isinstance(metric, Mapping) or metric.get(part) is None:
        return MISSING
    value, unit = metric[part], metric.get("unit_hint")
    if part == "pct":
        number = to_number(value)
        return human_percent(number) if number is not None else str(value)
    if part == "capacity" and unit == "percent" and key.startswith("cpu"):
        number = to_number(value)
        return human_cores(number / 100) if number is not None else str(value)
    if part == "stats.rate":
        if unit == "bytes":
            unit = "bps"
        elif unit == "msec":  # CPU time per second of wall time
            number = to_number(value)
            return f"{human_number(number)} ms/s" if number is not None else str(value)
        elif unit not in ("bps", None):
            formatted = format_value(value, None)
            return formatted if formatted == MISSING else f"{formatted}/s"
    return format_value(value, unit)


def _mem_cell(mem: Any) -> str:
    current = format_metric(mem)
    capacity = format_metric(mem, "capacity")
    return current if capacity == MISSING else f"{current} / {capacity}"


def kernel_row(kernel: Mapping[str, Any]) -> dict[str, str]:
    """One kernel's line of ``kernel top``."""
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


def kernel_stats_table(kernels: list[dict[str, Any]], title: str | None = None) -> FitTable:
    return render.table([kernel_row(k) for k in kernels], KERNEL_COLUMNS, title)


def _metric_row(key: str, value: Any) -> dict[str, str]:
    return {"metric": key, "current": format_metric(value, key=key),
            "capacity": format_metric(value, "capacity", key),
            "pct": format_metric(value, "pct"), "rate": format_metric(value, "stats.rate"),
            "avg": format_metric(value, "stats.avg"), "max": format_metric(value, "stats.max")}


def metric_rows(metrics: Any) -> list[dict[str, str]]:
    """One row per metric of a {key: MetricValue} map, sorted by key."""
    return [_metric_row(key, value) for key, value in render.iter_mapping(metrics)]


def metric_table(metrics: Any, title: str | None = None) -> FitTable:
    return render.table(metric_rows(metrics), METRIC_COLUMNS, title)


def device_rows(devices: Any) -> list[dict[str, str]]:
    """One row per metric and device; metrics no device reports (``cuda_util: {}``) left out."""
    rows = []
    for key, per_device in render.iter_mapping(devices):
        for device, value in render.iter_mapping(per_device):
            rows.append({**_metric_row(key, value), "device": device})
    return rows


def device_table(devices: Any, title: str | None = None) -> FitTable | None:
    rows = device_rows(devices)
    return render.table(rows, DEVICE_COLUMNS, title) if rows else None
