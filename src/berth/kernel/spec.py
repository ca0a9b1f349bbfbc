"""The kernel creation spec, shaped like Backend.AI's ``KernelCreationConfig`` (reference §2).

The Manager sends many fields Berth does not use; they are kept (``extra="allow"``) so a restart
can hand the same config back. What Berth relies on is validated here, once, into plain values.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from decimal import Decimal
from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    ValidationInfo,
    field_serializer,
    field_validator,
)

from berth.config import MAX_ID, parse_binary_size
from berth.errors import InvalidArgument, InvalidKernelSpec
from berth.kernel.cluster import ClusterSpec
from berth.resources import INTRINSIC_SLOT_TYPES, INTRINSIC_SLOTS, ResourceSlots, parse_slots
from berth.types import KernelId, SlotName, SlotType

__all__ = [
    "ImageConfig",
    "KernelSpec",
    "MountSpec",
    "ServicePortDecl",
    "parse_kernel_spec",
    "parse_service_ports",
]

_INTRINSIC_RESERVED_PORTS = frozenset({2000, 2001, 2002, 2003, 2200, 7681})
# Backend.AI's intrinsic services, which an image may declare at their own ports.
INTRINSIC_SERVICES = {"sshd": ("tcp", 2200), "ttyd": ("http", 7681)}
# A name Docker and environ.txt carry as one variable: no "=", no whitespace or control chars.
_ENV_NAME = re.compile(r"[^=\s\x00-\x1f\x7f]+")
_Id = Annotated[int, Field(ge=0, le=MAX_ID)]


class ImageConfig(BaseModel):
    model_config = ConfigDict(extra="allow")

    canonical: str
    labels: dict[str, str] = Field(default_factory=dict)
    digest: str | None = None
    repo_digest: str | None = None
    registry: dict[str, Any] = Field(default_factory=dict)
    is_local: bool = False
    auto_pull: Literal["digest", "tag", "none"] = "digest"
    architecture: str | None = None
    project: str | None = None

    @field_validator("canonical")
    @classmethod
    def _non_empty(cls, value: str) -> str:
        if not value.strip():
            raise ValueError("image canonical name is empty")
        return value.strip()

    @property
    def ref(self) -> str:
        """The name the engine knows the image by. A local image (``is_local``: registered
        from a node's own engine, never pulled) is known by its short name, the canonical
        without the registry part (``local/berth/python:3.11`` runs ``berth/python:3.11``)."""
        registry = str(self.registry.get("name") or "")
        if self.is_local and registry and self.canonical.startswith(registry + "/"):
            return self.canonical[len(registry) + 1:]
        return self.canonical


class MountSpec(BaseModel):
    model_config = ConfigDict(extra="allow")

    name: str
    host_path: str
    kernel_path: str | None = None
    mount_perm: Literal["ro", "rw", "wd", "rw-delete"] = "rw"


class KernelSpec(BaseModel):
    model_config = ConfigDict(extra="allow")

    image: ImageConfig
    kernel_id: KernelId | None = None
    session_id: str | None = None
    owner_user_id: str | None = None
    owner_project_id: str | None = None
    session_type: str = "interactive"
    cluster_role: str = "main"
    cluster_idx: int = 1
    cluster_hostname: str | None = None
    local_rank: int = Field(0, ge=0)
    # ClusterInfo of the create_kernels call (kernel/cluster.py); the facade puts it here.
    cluster_info: ClusterSpec = Field(default_factory=ClusterSpec)
    resource_slots: ResourceSlots
    resource_opts: dict[str, Any] = Field(default_factory=dict)
    environ: dict[str, str] = Field(default_factory=dict)
    mounts: list[MountSpec] = Field(default_factory=list)
    bootstrap_script: str | None = None
    startup_command: str | None = None
    preopen_ports: list[int] = Field(default_factory=list)
    uid: _Id | None = None
    main_gid: _Id | None = None
    supplementary_gids: list[_Id] = Field(default_factory=list)
    internal_data: dict[str, Any] | None = None

    @field_serializer("internal_data")
    def _internal_data(self, value: dict[str, Any] | None) -> dict[str, Any] | None:
        # The session's private key is written into the scratch once (kernel/sshkeys.py) and
        # never reaches the ledger or a reply.
        if value is None or "ssh_keypair" not in value:
            return value
        return {k: v for k, v in value.items() if k != "ssh_keypair"}

    @field_validator("resource_slots", mode="before")
    @classmethod
    def _slots(cls, value: Any, info: ValidationInfo) -> ResourceSlots:
        # Parsed once, here, by the node's slot types when the caller knows them (a create);
        # a ledger record holds canonical numbers and is read without them.
        if not isinstance(value, dict):
            raise ValueError("resource_slots must be a mapping of slot name to amount")  # noqa: TRY004 - pydantic turns only ValueError into a field error
        node_types = (info.context or {}).get("slot_types")
        try:
            if node_types is not None:
                out = parse_slots(value, node_types)
            else:
                out = parse_slots(value, INTRINSIC_SLOT_TYPES, keep_unknown=True)
        except InvalidArgument as exc:
            raise ValueError(str(exc)) from exc
        for required in INTRINSIC_SLOTS:
            if required not in out:
                raise ValueError(f"resource_slots.{required} is mandatory")
            if out[required] <= 0:
                raise ValueError("resource_slots.cpu and resource_slots.mem must be positive")
        return out

    @field_validator("preopen_ports")
    @classmethod
    def _ports(cls, value: list[int]) -> list[int]:
        for port in value:
            if not 1024 < port < 65536 or port in _INTRINSIC_RESERVED_PORTS:
                raise ValueError(f"preopen port {port} is reserved or out of range")
        if len(set(value)) != len(value):
            raise ValueError("preopen ports repeat")
        return value

    @field_validator("environ", mode="before")
    @classmethod
    def _environ(cls, value: Any) -> dict[str, str]:
        if value is None:
            return {}
        if not isinstance(value, dict):
            raise ValueError("environ must be a mapping")  # noqa: TRY004 - pydantic turns only ValueError into a field error
        environ = {str(k): str(v) for k, v in value.items()}
        for name, text in environ.items():
            # environ.txt is one KEY=VALUE per line: a newline would smuggle in a variable.
            if not _ENV_NAME.fullmatch(name):
                raise ValueError(f"environ: {name!r} is not a usable variable name")
            if any(ch in text for ch in "\n\r\x00"):
                raise ValueError(f"environ.{name}: value holds a newline or NUL")
        return environ

    @field_validator("resource_opts")
    @classmethod
    def _opts(cls, value: dict[str, Any]) -> dict[str, Any]:
        raw = value.get("shmem")
        if raw not in (None, "", 0, "0"):  # read when the container is made: checked here
            size = parse_binary_size(raw)  # ValueError: a field error naming resource_opts
            if size >= 1 << 62:
                raise ValueError(f"shmem {raw!r} is larger than any machine's memory")
        return value

    @property
    def shmem(self) -> int | None:
        raw = self.resource_opts.get("shmem")
        return None if raw in (None, "", 0, "0") else parse_binary_size(raw)

    @property
    def cpu(self) -> Decimal:
        return self.resource_slots[SlotName("cpu")]

    @property
    def mem(self) -> Decimal:
        """Bytes."""
        return self.resource_slots[SlotName("mem")]

    def hostname(self) -> str:
        return self.cluster_hostname or f"{self.cluster_role}{self.cluster_idx}"


def parse_kernel_spec(raw: Any, *, kernel_id: KernelId | None = None, session_id: str | None = None,
                      slot_types: Mapping[SlotName, SlotType] | None = None) -> KernelSpec:
    """Validate a raw config; raises :class:`InvalidKernelSpec` naming the field, or
    :class:`UnsupportedSlot` for a slot `slot_types` (the node's) lacks. Without `slot_types`,
    only `mem` reads as a size and other slots are kept as numbers."""
    if not isinstance(raw, dict):
        raise InvalidKernelSpec("kernel config must be a mapping", field="config")
    data = dict(raw)
    if kernel_id is not None:
        data["kernel_id"] = kernel_id
    if session_id is not None:
        data.setdefault("session_id", session_id)
    try:
        return KernelSpec.model_validate(
            data, context=None if slot_types is None else {"slot_types": slot_types})
    except ValidationError as exc:
        first = exc.errors()[0]
        field = ".".join(str(p) for p in first["loc"])
        raise InvalidKernelSpec(first["msg"], field=field) from exc


class ServicePortDecl(BaseModel):
    model_config = ConfigDict(frozen=True)

    name: str
    protocol: str
    container_ports: tuple[int, ...]


def parse_service_ports(label: str | None) -> list[ServicePortDecl]:
    """Parse ``ai.backend.service-ports``: ``name:proto:port`` or ``name:proto:[p1,p2]``,
    comma-joined. Protocols: tcp, http, preopen, vnc, rdp (``pty`` entries are skipped, as
    Backend.AI does). Ports are 1025..65535, none used twice, no name twice; 2000-2003, 2200 and
    7681 belong to the agent's intrinsic services, except that an image serving those itself
    declares ``sshd:tcp:2200`` or ``ttyd:http:7681``. Anything else is refused whole."""
    decls: list[ServicePortDecl] = []
    names: set[str] = set()
    used: set[int] = set()
    for item in (i.strip() for i in _split_top_level(label or "")):
        if not item:
            continue
        parts = [p.strip() for p in item.split(":", 2)]
        if len(parts) != 3 or not parts[0]:
            raise _bad_service_ports("expected name:protocol:port", item)
        name, proto, ports_text = parts
        if proto in _SKIPPED_PROTOCOLS:
            continue
        if proto not in _SERVICE_PROTOCOLS:
            raise _bad_service_ports(f"unsupported protocol {proto!r}", item)
        ports = _service_ports(name, proto, ports_text, item)
        if name in names:
            raise _bad_service_ports("duplicate service name", item)
        if used.intersection(ports):
            raise _bad_service_ports("container port used twice", item)
        names.add(name)
        used.update(ports)
        decls.append(ServicePortDecl(name=name, protocol=proto, container_ports=ports))
    return decls


_SERVICE_PROTOCOLS = frozenset({"tcp", "http", "preopen", "vnc", "rdp"})
_SKIPPED_PROTOCOLS = frozenset({"pty"})


def _bad_service_ports(why: str, item: str) -> InvalidKernelSpec:
    return InvalidKernelSpec(f"bad service-port entry {item!r}: {why}",
                             field="ai.backend.service-ports", entry=item)


def _service_ports(name: str, proto: str, text: str, item: str) -> tuple[int, ...]:
    listed = text.startswith("[") and text.endswith("]")
    items = [p for p in text[1:-1].split(",") if p.strip()] if listed else [text]
    if not items:
        raise _bad_service_ports("empty port list", item)
    # an image serving sshd/ttyd itself declares them at Backend.AI's intrinsic ports
    intrinsic = INTRINSIC_SERVICES.get(name)
    own = intrinsic[1] if not listed and intrinsic is not None and intrinsic[0] == proto else None
    ports = []
    for raw in items:
        try:
            port = int(raw.strip())
        except ValueError:
            raise _bad_service_ports("invalid port number", item) from None
        if not 1024 < port <= 65535:
            raise _bad_service_ports("port must be within 1025..65535", item)
        if port in _INTRINSIC_RESERVED_PORTS and port != own:
            raise _bad_service_ports(f"port {port} is reserved for intrinsic services", item)
        ports.append(port)
    return tuple(ports)


def _split_top_level(text: str) -> list[str]:
    out, depth, current = [], 0, ""
    for ch in text:
        depth += ch == "["
        depth -= ch == "]"
        if ch == "," and depth == 0:
            out.append(current)
            current = ""
        else:
            current += ch
    if current.strip():
        out.append(current)
    return out
