"""A kernel's service ports as frozen records; the wire dict only at the edges.

A :class:`ServicePort` is a declared service (from the image's ``ai.backend.service-ports``
label or the spec's preopen ports) with the host ports published for it. Assigning host ports
makes new records; :meth:`ServicePort.to_wire` / :meth:`ServicePort.from_wire` are the shape
the ledger, RPC replies and events carry (``name``, ``protocol``, ``container_ports``,
``host_ports``, ``is_inference``).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any

from berth.errors import InvalidKernelSpec
from berth.kernel.spec import KernelSpec, ServicePortDecl, parse_service_ports
from berth.types import KernelId

__all__ = [
    "ServicePort",
    "assign_host_ports",
    "declared_service_ports",
    "host_port_map",
    "service_ports_from_wire",
    "service_ports_label",
    "service_ports_to_wire",
    "without_host_ports",
]


@dataclass(frozen=True)
class ServicePort:
    name: str
    protocol: str
    container_ports: tuple[int, ...]
    host_ports: tuple[int, ...] = ()
    is_inference: bool = False

    @classmethod
    def from_decl(cls, decl: ServicePortDecl) -> ServicePort:
        return cls(decl.name, decl.protocol, tuple(decl.container_ports))

    @property
    def shape(self) -> tuple[str, str, tuple[int, ...]]:
        """What it declares, without the host ports it holds."""
        return self.name, self.protocol, self.container_ports

    def pairs(self) -> Iterable[tuple[int, int]]:
        """(container port, host port) of each port published."""
        return zip(self.container_ports, self.host_ports, strict=False)

    def label_entry(self) -> str:
        ports = self.container_ports
        text = str(ports[0]) if len(ports) == 1 else "[" + ",".join(map(str, ports)) + "]"
        return f"{self.name}:{self.protocol}:{text}"

    def to_wire(self) -> dict[str, Any]:
        return {"name": self.name, "protocol": self.protocol,
                "container_ports": list(self.container_ports),
                "host_ports": list(self.host_ports), "is_inference": self.is_inference}

    @classmethod
    def from_wire(cls, data: Mapping[str, Any]) -> ServicePort:
        return cls(name=str(data["name"]), protocol=str(data["protocol"]),
                   container_ports=tuple(int(p) for p in data.get("container_ports") or ()),
                   host_ports=tuple(int(p) for p in data.get("host_ports") or ()),
                   is_inference=bool(data.get("is_inference", False)))


def declared_service_ports(kernel_id: KernelId, spec: KernelSpec,
                           image_labels: Mapping[str, str]) -> tuple[ServicePort, ...]:
    """The main kernel's services (the image's label, then the spec's preopen ports), no host
    ports yet; other cluster roles publish none."""
    if spec.cluster_role not in ("main", "master"):
        return ()
    decls = [ServicePort.from_decl(d)
             for d in parse_service_ports(image_labels.get("ai.backend.service-ports"))]
    taken = {p for d in decls for p in d.container_ports}
    for port in spec.preopen_ports:
        if port in taken:
            raise InvalidKernelSpec(f"preopen port {port} collides with an image service",
                                    field="preopen_ports", kernel_id=kernel_id)
        decls.append(ServicePort(str(port), "preopen", (port,)))
    return tuple(decls)


def assign_host_ports(ports: Sequence[ServicePort], host_ports: Iterable[int]
                      ) -> tuple[ServicePort, ...]:
    """New records holding ``host_ports`` in order, one per container port (a longer
    ``host_ports`` leaves its tail unused)."""
    it = iter(host_ports)
    return tuple(replace(p, host_ports=tuple(next(it) for _ in p.container_ports))
                 for p in ports)


def without_host_ports(ports: Sequence[ServicePort]) -> tuple[ServicePort, ...]:
    return tuple(replace(p, host_ports=()) for p in ports)


def host_port_map(ports: Sequence[ServicePort]) -> dict[str, list[int]]:
    """``{service name: host ports}``, the ledger's ``host_ports``."""
    return {p.name: list(p.host_ports) for p in ports}


def service_ports_label(ports: Sequence[ServicePort]) -> str:
    """The container's ``ai.backend.service-ports`` label for these services."""
    return ",".join(p.label_entry() for p in ports)


def service_ports_to_wire(ports: Sequence[ServicePort]) -> list[dict[str, Any]]:
    return [p.to_wire() for p in ports]


def service_ports_from_wire(data: Iterable[Mapping[str, Any]]) -> tuple[ServicePort, ...]:
    return tuple(ServicePort.from_wire(d) for d in data)
