"""The screens of ``berth kernel ls|show|create|restart`` and ``berth agent status|hwinfo``:
an RPC answer in, rich parts out (pure; the commands print them, ``--json`` bypasses them).

One concept per row: a kernel's id, container and slots appear once although its
``get_status`` row carries each under two names; ports, allocation and stats are sub-tables.
"""

from __future__ import annotations

from collections.abc import Collection, Iterator, Mapping, Sequence
from typing import Any

from rich.console import Group, RenderableType

from berth.cli import render
from berth.cli.render import Column, FitTable
from berth.cli.stats_view import device_table, metric_table
from berth.cli.units import (
    MISSING,
    human_bytes,
    human_duration,
    human_percent,
    human_time,
    slot_amount,
    to_number,
)

__all__ = [
    "KERNEL_COLUMNS",
    "agent_status",
    "hwinfo",
    "kernel_detail",
    "kernel_list",
    "kernel_reply",
    "service_url",
]

KERNEL_COLUMNS = [
    Column("id", "KERNEL", no_wrap=True), Column("session", "SESSION", 5, no_wrap=True),
    Column("state", "STATE"), Column("image", "IMAGE", 1, max_width=32),
    Column("container", "CONTAINER", 4, no_wrap=True),
    Column("slots", "SLOTS", 2, max_width=20),
    Column("ports", "PORTS", 3), Column("age", "AGE", right=True),
]
_SHOWN_ELSEWHERE = frozenset({
    "id", "kernel_id", "session_id", "state", "image", "container", "container_id", "slots",
    "resource_slots", "allocation", "ports", "service_ports", "host_ports", "tls_host_ports",
    "service_urls", "created_at", "age", "stats", "termination",
})


def service_url(protocol: str | None, host: str, host_port: int,
                tls_host_ports: Collection[int] = ()) -> str | None:
    """The URL of an HTTP(-like) service port: ``https`` where the agent serves it over TLS
    (``[service-tls]``; the kernel row's ``tls_host_ports``), else ``http``."""
    if protocol not in ("http", "preopen"):
        return None
    scheme = "https" if host_port in tls_host_ports else "http"
    return f"{scheme}://{host}:{host_port}/"


# ------------------------------------------------------------------ kernels

def slots_text(slots: Any, sep: str = ", ") -> str:
    """``1 core, 512 MiB``; accelerator slots by name (``cuda.device 1``)."""
    parts = []
    for name, value in render.iter_mapping(slots):
        amount = slot_amount(name, value)
        parts.append(amount if name in ("cpu", "mem") else f"{name} {amount}")
    return sep.join(parts) or MISSING


def _port_decls(row: Mapping[str, Any]) -> list[Mapping[str, Any]]:
    ports = row.get("service_ports", row.get("ports"))
    return [p for p in ports if isinstance(p, Mapping)] if isinstance(ports, list) else []


def _ports_text(row: Mapping[str, Any]) -> str:
    decls = _port_decls(row)
    if not decls:
        plain = row.get("ports")
        return render.cell(plain) if isinstance(plain, list) else MISSING
    return render.lines(f"{d.get('name')} {hp}->{cp}" for d in decls
                        for cp, hp in zip(d.get("container_ports") or [],
                                          d.get("host_ports") or [], strict=False))


def _age(row: Mapping[str, Any]) -> str:
    age = to_number(row.get("age"))
    return human_duration(age) if age is not None else MISSING


def kernel_list_row(row: Mapping[str, Any]) -> dict[str, str]:
    return {"id": str(row.get("id") or row.get("kernel_id") or MISSING),
            "session": str(row.get("session_id") or MISSING),
            "state": str(row.get("state") or MISSING), "image": str(row.get("image") or MISSING),
            "container": str(row.get("container_id") or "")[:12] or MISSING,
            "slots": slots_text(row.get("resource_slots", row.get("slots"))),
            "ports": _ports_text(row), "age": _age(row)}


def kernel_list(rows: Sequence[Mapping[str, Any]], title: str | None = None) -> FitTable:
    return render.table([kernel_list_row(r) for r in rows], KERNEL_COLUMNS, title)


def _created(row: Mapping[str, Any]) -> str:
    created, age = to_number(row.get("created_at")), to_number(row.get("age"))
    if created is None:
        return f"{human_duration(age)} ago" if age is not None else MISSING
    return human_time(created, created + age if age is not None else None)


def _termination(value: Any) -> str | None:
    if not isinstance(value, Mapping):
        return None if value is None else render.cell(value)
    text = str(value.get("reason") or MISSING)
    if value.get("exit_code") is not None:
        text += f" (exit code {value['exit_code']})"
    return f"{text}: {value['detail']}" if value.get("detail") else text


def _allocated(allocation: Any) -> Iterator[tuple[str, str, str]]:
    """(slot, device, amount) of an allocation's ``devices`` ({plugin: {slot: {dev: n}}})."""
    devices = allocation.get("devices") if isinstance(allocation, Mapping) else None
    for _plugin, per_slot in render.iter_mapping(devices):
        for slot, per_device in render.iter_mapping(per_slot):
            for device, amount in render.iter_mapping(per_device):
                yield slot, device, slot_amount(slot, amount)


def resources_table(row: Mapping[str, Any]) -> FitTable | None:
    """SLOT / REQUESTED / DEVICE / ALLOCATED: what the kernel asked for and where it got it."""
    allocation = row.get("allocation")
    requested = (allocation.get("requested") if isinstance(allocation, Mapping) else None) \
        or row.get("resource_slots", row.get("slots"))
    by_slot: dict[str, list[tuple[str, str]]] = {}
    for slot, device, amount in _allocated(allocation):
        by_slot.setdefault(slot, []).append((device, amount))
    rows = []
    for slot in dict.fromkeys([*(k for k, _ in render.iter_mapping(requested)), *by_slot]):
        asked = requested.get(slot) if isinstance(requested, Mapping) else None
        for i, (device, amount) in enumerate(by_slot.get(slot) or [(MISSING, MISSING)]):
            rows.append({"slot": slot if i == 0 else "",
                         "requested": slot_amount(slot, asked) if i == 0 else "",
                         "device": device, "allocated": amount})
    columns = [Column("slot", "SLOT"), Column("requested", "REQUESTED", right=True),
               Column("device", "DEVICE"), Column("allocated", "ALLOCATED", right=True)]
    return render.table(rows, columns) if rows else None


def services_table(row: Mapping[str, Any], host: str) -> FitTable | None:
    """One row per published port: SERVICE / PROTOCOL / CONTAINER / HOST / URL."""
    tls = set(row.get("tls_host_ports") or ())
    rows, named = [], set()
    for decl in _port_decls(row):
        named.add(decl.get("name"))
        for cp, hp in zip(decl.get("container_ports") or [], decl.get("host_ports") or [],
                          strict=False):
            rows.append({"service": decl.get("name"), "protocol": decl.get("protocol"),
                         "container": cp, "host": hp,
                         "url": service_url(decl.get("protocol"), host, hp, tls)})
    for name, ports in render.iter_mapping(row.get("host_ports")):
        if name not in named:
            rows.extend({"service": name, "host": hp} for hp in ports or [])
    columns = [Column("service", "SERVICE"), Column("protocol", "PROTOCOL", 2),
               Column("container", "CONTAINER", 1, right=True),
               Column("host", "HOST PORT", right=True), Column("url", "URL", no_wrap=True)]
    return render.table(rows, columns) if rows else None


def kernel_detail(row: Mapping[str, Any], host: str) -> Group:
    """``kernel show``: who it is, then its resources, services and latest stats."""
    fields: list[tuple[str, Any]] = [
        ("Kernel", row.get("id") or row.get("kernel_id")), ("Session", row.get("session_id")),
        ("State", row.get("state")), ("Image", row.get("image")),
        ("Container", row.get("container_id")), ("Created", _created(row)),
    ]
    if (ended := _termination(row.get("termination"))) is not None:
        fields.append(("Termination", ended))
    if not _port_decls(row) and row.get("ports"):  # bare port numbers (pre-opened ports)
        fields.append(("Ports", row["ports"]))
    fields += [(render.label(k), v) for k, v in row.items() if k not in _SHOWN_ELSEWHERE]
    parts: list[RenderableType] = [render.describe(fields)]
    for title, body in (("Resources", resources_table(row)),
                        ("Services", services_table(row, host)),
                        ("Usage", metric_table(row["stats"]) if row.get("stats") else None)):
        if body is not None:
            parts += ["", render.section(title, body)]
    return Group(*parts)


_LEGACY_REPLY_PORTS = frozenset({"repl_in_port", "repl_out_port", "stdin_port", "stdout_port"})


def kernel_reply(reply: Mapping[str, Any], host: str, session_id: str | None = None) -> Group:
    """What ``create_kernels`` / ``restart_kernel`` answered for one kernel."""
    spec = reply.get("resource_spec")
    slots = spec.get("slots") if isinstance(spec, Mapping) else None
    fields: list[tuple[str, Any]] = [("Kernel", reply.get("id")), ("Session", session_id),
                                     ("Container", reply.get("container_id"))]
    fields = [(k, v) for k, v in fields if v is not None]
    if slots:
        fields.append(("Slots", slots_text(slots)))
    skip = {"id", "container_id", "resource_spec", "service_ports", *_LEGACY_REPLY_PORTS}
    fields += [(render.label(k), v) for k, v in reply.items()
               if k not in skip and v not in ({}, [], None)]
    parts: list[RenderableType] = [render.describe(fields)]
    if (services := services_table(reply, host)) is not None:
        parts += ["", render.section("Services", services)]
    return Group(*parts)


# ------------------------------------------------------------------ agent

_AGENT_KNOWN = frozenset({"agent_id", "agent", "version", "architecture", "ready", "uptime",
                          "events", "slots", "node_stats", "bgtasks", "kernels"})


def _events_text(events: Any) -> Any:
    if not isinstance(events, Mapping):
        return events
    return ", ".join(f"{v} {k}" for k, v in events.items())


def slots_table(slots: Any) -> FitTable | None:
    """SLOT / TOTAL / USED / AVAILABLE of ``get_status``'s ``slots``."""
    if not isinstance(slots, Mapping):
        return None
    parts = ("total", "used", "available")
    names = dict.fromkeys(k for part in parts for k, _ in render.iter_mapping(slots.get(part)))
    rows = [{"slot": name, **{p: slot_amount(name, (slots.get(p) or {}).get(name))
                              for p in parts}} for name in names]
    columns = [Column("slot", "SLOT"), *(Column(p, p.upper(), right=True) for p in parts)]
    return render.table(rows, columns) if rows else None


def _progress(record: Mapping[str, Any]) -> str:
    current, total = to_number(record.get("current")), to_number(record.get("total"))
    if total:
        return human_percent(100 * (current or 0) / total)
    return MISSING if not current else render.cell(record.get("current"))


def bgtask_table(tasks: Any) -> FitTable | None:
    rows = [{"task": tid, "name": rec.get("name"), "status": rec.get("status"),
             "progress": _progress(rec), "message": rec.get("message")}
            for tid, rec in render.iter_mapping(tasks) if isinstance(rec, Mapping)]
    columns = [Column("task", "TASK", no_wrap=True), Column("name", "NAME"),
               Column("status", "STATUS"), Column("progress", "PROGRESS", 1, right=True),
               Column("message", "MESSAGE", 2)]
    return render.table(rows, columns) if rows else None


def agent_summary(status: Mapping[str, Any]) -> list[tuple[str, Any]]:
    info = status.get("agent")
    extra = dict(info) if isinstance(info, Mapping) else {}
    uptime = to_number(status.get("uptime"))
    fields: list[tuple[str, Any]] = [
        ("Agent", status.get("agent_id") or extra.pop("id", None)),
        ("Version", status.get("version")), ("Architecture", status.get("architecture")),
        ("Ready", status.get("ready")),
        ("Uptime", human_duration(uptime) if uptime is not None else None),
        ("Events", _events_text(status.get("events"))),
    ]
    fields = [(k, v) for k, v in fields if v is not None]
    fields += [(render.label(k), v) for k, v in extra.items()]
    return fields + [(render.label(k), v) for k, v in status.items() if k not in _AGENT_KNOWN]


def agent_status(status: Mapping[str, Any], kernels: Sequence[Mapping[str, Any]]) -> Group:
    """``agent status``: the node, its slots and usage, its background tasks, its kernels."""
    node_stats = status.get("node_stats")
    node: Mapping[str, Any] = node_stats if isinstance(node_stats, Mapping) else {}
    parts: list[RenderableType] = [render.describe(agent_summary(status))]
    sections = (("Slots", slots_table(status.get("slots"))),
                ("Node usage", metric_table(node["node"]) if node.get("node") else None),
                ("Devices", device_table(node.get("devices"))),
                ("Background tasks", bgtask_table(status.get("bgtasks"))),
                ("Kernels", kernel_list(kernels) if kernels else render.nested("none")))
    for title, body in sections:
        if body is not None:
            parts += ["", render.section(title, body)]
    return Group(*parts)


def _metadata_text(device: str, metadata: Any) -> str:
    def value(key: str, raw: Any) -> str:
        number = to_number(raw)
        is_size = device == "mem" and key == "total"
        return human_bytes(number) if is_size and number is not None else render.cell(raw)

    return render.lines(f"{k}: {value(k, v)}" for k, v in render.iter_mapping(metadata))


def hwinfo(result: Mapping[str, Any]) -> FitTable:
    """``agent hwinfo``: one row per compute plugin."""
    rows = []
    for name, info in sorted(result.items()):
        data = info if isinstance(info, Mapping) else {"status": info}
        rows.append({"device": name, "status": data.get("status"),
                     "info": data.get("status_info"),
                     "metadata": _metadata_text(name, data.get("metadata"))})
    return render.table(rows, [Column("device", "DEVICE"), Column("status", "STATUS"),
                               Column("metadata", "METADATA"), Column("info", "INFO")])
