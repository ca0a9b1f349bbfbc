"""Parser for the image label `ai.backend.service-ports` (pure, standard library only).

Format: comma-separated `name:protocol:port` or `name:protocol:[port1,port2]` entries, e.g.
`jupyter:http:8080,vscode:http:8180,tb:http:[6006,6007]`. Protocols: tcp, http, preopen, vnc,
rdp; `pty` entries are skipped (Backend.AI does the same). Ports 2000-2003, 2200, 7681 and
ports <= 1024 are reserved for the agent's intrinsic services and refused, except that an
image which serves the intrinsic services itself declares them at their own ports:
`sshd:tcp:2200` and `ttyd:http:7681` (Backend.AI's krunner adds exactly these two).
"""

from __future__ import annotations

from typing import NamedTuple

PROTOCOLS = ("tcp", "http", "preopen", "vnc", "rdp")
SKIPPED_PROTOCOLS = ("pty",)
RESERVED_PORTS = frozenset({2000, 2001, 2002, 2003, 2200, 7681})
INTRINSIC_SERVICES = {"sshd": ("tcp", 2200), "ttyd": ("http", 7681)}


class ServicePortsError(ValueError):
    """The label is malformed; `entry` is the offending item."""

    def __init__(self, message: str, entry: str) -> None:
        super().__init__("%s: %r" % (message, entry))
        self.entry = entry


class ServicePort(NamedTuple):
    name: str
    protocol: str
    container_ports: tuple[int, ...]


def split_entries(label: str) -> list[str]:
    """Split on commas that are not inside `[...]`."""
    entries: list[str] = []
    current: list[str] = []
    depth = 0
    for ch in label:
        if ch == "[":
            depth += 1
        elif ch == "]":
            depth -= 1
        if ch == "," and depth == 0:
            entries.append("".join(current))
            current = []
        else:
            current.append(ch)
    entries.append("".join(current))
    return [e.strip() for e in entries if e.strip()]


def _parse_port(text: str, entry: str, allowed: int | None = None) -> int:
    try:
        port = int(text.strip())
    except ValueError:
        raise ServicePortsError("invalid port number", entry) from None
    if port <= 1024 or port > 65535:
        raise ServicePortsError("port must be within 1025..65535", entry)
    if port in RESERVED_PORTS and port != allowed:
        raise ServicePortsError("port %d is reserved for intrinsic services" % port, entry)
    return port


def _parse_ports(text: str, entry: str, allowed: int | None = None) -> tuple[int, ...]:
    text = text.strip()
    if text.startswith("[") and text.endswith("]"):
        items = [p for p in text[1:-1].split(",") if p.strip()]
        if not items:
            raise ServicePortsError("empty port list", entry)
        return tuple(_parse_port(p, entry) for p in items)
    return (_parse_port(text, entry, allowed),)


def parse_entry(entry: str) -> ServicePort:
    parts = entry.split(":", 2)
    if len(parts) != 3 or not parts[0].strip():
        raise ServicePortsError("expected name:protocol:port", entry)
    name, protocol, ports = (p.strip() for p in parts)
    if protocol not in PROTOCOLS:
        raise ServicePortsError("unsupported protocol %r" % protocol, entry)
    intrinsic = INTRINSIC_SERVICES.get(name)
    allowed = intrinsic[1] if intrinsic is not None and intrinsic[0] == protocol else None
    return ServicePort(name, protocol, _parse_ports(ports, entry, allowed))


def parse_service_ports(label: str) -> list[ServicePort]:
    """Parse the whole label; duplicate names or container ports are refused."""
    result: list[ServicePort] = []
    seen_names: set[str] = set()
    seen_ports: set[int] = set()
    for entry in split_entries(label or ""):
        parts = entry.split(":", 2)
        if len(parts) == 3 and parts[1].strip() in SKIPPED_PROTOCOLS:
            continue
        port = parse_entry(entry)
        if port.name in seen_names:
            raise ServicePortsError("duplicate service name", entry)
        if seen_ports.intersection(port.container_ports):
            raise ServicePortsError("container port used twice", entry)
        seen_names.add(port.name)
        seen_ports.update(port.container_ports)
        result.append(port)
    return result
