"""Build a Backend.AI-shaped KernelCreationConfig from CLI options (pure)."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

from berth.errors import InvalidArgument

_SIZE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([kmgtp]?)(i?b?)\s*$", re.IGNORECASE)
_UNITS = {"": 1, "k": 2**10, "m": 2**20, "g": 2**30, "t": 2**40, "p": 2**50}
MOUNT_MODES = ("ro", "rw", "wd")


def parse_size(text: str, field_name: str = "size") -> int:
    """``"512m"``, ``"1g"``, ``"1GiB"``, ``"1048576"`` → bytes (binary units)."""
    m = _SIZE.match(text)
    if m is None:
        raise InvalidArgument(f"not a size: {text!r}", field=field_name)
    return int(float(m.group(1)) * _UNITS[m.group(2).lower()])


def parse_mount(text: str) -> dict[str, Any]:
    """``SRC:NAME:MODE`` → a VFolderMount-shaped dict mounted at /home/work/NAME."""
    parts = text.rsplit(":", 2)
    if len(parts) != 3 or not all(parts) or parts[2] not in MOUNT_MODES:
        raise InvalidArgument(f"mount must be SRC:NAME:MODE with MODE in {MOUNT_MODES}: "
                              f"{text!r}", field="mount")
    src, name, mode = parts
    return {"name": name, "vfid": "", "vfsubpath": ".", "host_path": src,
            "kernel_path": f"/home/work/{name}", "mount_perm": mode, "usage_mode": "general"}


def parse_env(text: str) -> tuple[str, str]:
    key, sep, value = text.partition("=")
    if not sep or not key:
        raise InvalidArgument(f"env must be KEY=VALUE: {text!r}", field="env")
    return key, value


@dataclass(frozen=True)
class KernelRequest:
    session_id: str
    kernel_id: str
    image: str
    cpu: str
    mem: int
    shmem: int | None = None
    mounts: list[dict[str, Any]] = field(default_factory=list)
    environ: dict[str, str] = field(default_factory=dict)
    ports: list[int] = field(default_factory=list)
    architecture: str = "x86_64"


def image_config(canonical: str, architecture: str) -> dict[str, Any]:
    """An image of this node's engine. Its registry is the reference's first part only when
    that names a registry host (Docker's rule: a dot, a port or ``localhost``); otherwise the
    image is the engine's own (``local``). Either way it is never pulled and runs under
    exactly ``canonical``."""
    first = canonical.split("/", 1)[0] if "/" in canonical else ""
    is_host = "." in first or ":" in first or first == "localhost"
    registry = first if is_host else "local"
    return {"canonical": canonical, "project": "", "architecture": architecture,
            "digest": "", "repo_digest": None,
            "registry": {"name": registry, "url": "", "username": None, "password": None},
            "labels": {}, "is_local": not is_host, "auto_pull": "none"}


def creation_config(req: KernelRequest) -> dict[str, Any]:
    """A KernelCreationConfig (reference §2.1) for one single-node kernel."""
    return {
        "image": image_config(req.image, req.architecture),
        "kernel_id": req.kernel_id, "session_id": req.session_id,
        "owner_user_id": "", "owner_project_id": None, "network_id": req.session_id,
        "auto_pull": "none", "session_type": "interactive", "cluster_mode": "single-node",
        "cluster_role": "main", "cluster_idx": 1, "cluster_hostname": "main1",
        "local_rank": 0, "uid": None, "main_gid": None, "supplementary_gids": [],
        "resource_slots": {"cpu": req.cpu, "mem": str(req.mem)},
        "resource_opts": {} if req.shmem is None else {"shmem": req.shmem},
        "environ": dict(req.environ), "mounts": list(req.mounts),
        "package_directory": [], "idle_timeout": 600, "bootstrap_script": None,
        "startup_command": None, "internal_data": None, "preopen_ports": list(req.ports),
        "allocated_host_ports": [], "scaling_group": "default", "agent_addr": "",
        "endpoint_id": None,
    }


def cluster_info() -> dict[str, Any]:
    return {"mode": "single-node", "size": 1, "replicas": {"main": 1}, "network_config": {},
            "ssh_keypair": None, "cluster_ssh_port_mapping": None}
