"""A kernel's place in its session's cluster: Backend.AI's ``ClusterInfo``, made plain (pure).

``create_kernels`` receives one ``ClusterInfo`` for all the kernels of a call: the cluster mode
and size, the replicas per role, the network the kernels share (``{}`` for none, or
``{"mode": "bridge", "network_name": ...}`` for the agent-local bridge of a multi-kernel
single-node session) and an SSH keypair for the kernels to reach each other. The facade puts it
into each kernel's spec as ``cluster_info``; this module validates it and derives what the
container needs: network attachment (the kernel's cluster hostname as hostname and alias), the
``BACKENDAI_CLUSTER_*`` environment and the key files under ``/home/config/ssh``.

The private key never reaches the ledger or a status reply (``exclude``): it is written once,
into the kernel's config directory, when the kernel is created.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, field_validator

from berth.errors import InvalidArgument
from berth.network import check_network_name

__all__ = ["ClusterSpec", "SSHKeypair", "cluster_default_environ", "cluster_environ",
           "write_ssh_files"]

SSH_DIR = "ssh"  # under config/, so /home/config/ssh in the kernel (Backend.AI's place)


class SSHKeypair(BaseModel):
    model_config = ConfigDict(extra="ignore")

    public_key: str
    private_key: str


class ClusterSpec(BaseModel):
    model_config = ConfigDict(extra="allow")

    mode: str = "single-node"
    size: int = Field(1, ge=1)
    replicas: dict[str, int] = Field(default_factory=dict)
    network_config: dict[str, Any] = Field(default_factory=dict)
    ssh_keypair: SSHKeypair | None = Field(None, exclude=True)
    cluster_ssh_port_mapping: dict[str, Any] | None = None

    @field_validator("mode", mode="before")
    @classmethod
    def _mode(cls, value: Any) -> str:
        # The Manager's DB default is the enum *name* ("SINGLE_NODE"); values are kebab-case.
        text = str(value or "single-node").strip().lower().replace("_", "-")
        if text not in ("single-node", "multi-node"):
            raise ValueError(f"unknown cluster mode {value!r}")
        return text

    @field_validator("network_config", mode="before")
    @classmethod
    def _network(cls, value: Any) -> dict[str, Any]:
        if value is None:
            return {}
        if not isinstance(value, Mapping):
            raise ValueError("network_config must be a mapping")  # noqa: TRY004 - pydantic turns only ValueError into a field error
        config = dict(value)
        mode = config.get("mode")
        if mode is None:
            return config
        if mode != "bridge":
            raise ValueError(f"network mode {mode!r} is not supported by this agent "
                             "(only agent-local bridge networks are)")
        try:
            check_network_name(str(config.get("network_name") or ""))
        except InvalidArgument as exc:
            raise ValueError(exc.message) from None
        return config

    @property
    def network_name(self) -> str | None:
        """The bridge network this kernel joins, or None for the default network."""
        if self.network_config.get("mode") == "bridge":
            return str(self.network_config["network_name"])
        return None


def _hosts(replicas: Mapping[str, int]) -> list[str]:
    return [f"{role}{idx}" for role, count in replicas.items() for idx in range(1, count + 1)]


def cluster_environ(cluster: ClusterSpec, local_rank: int) -> dict[str, str]:
    """Variables the agent sets (over the spec's), besides role, index and host."""
    return {"BACKENDAI_CLUSTER_MODE": cluster.mode,
            "BACKENDAI_CLUSTER_LOCAL_RANK": str(local_rank)}


def cluster_default_environ(cluster: ClusterSpec, role: str, hostname: str) -> dict[str, str]:
    """Variables the Manager normally sends itself (its values win): size, replicas, hosts.

    Without replicas (a single kernel, or a caller that sent no ``ClusterInfo``) the kernel is
    its own one-member cluster.
    """
    replicas = cluster.replicas or {role: 1}
    hosts = _hosts(cluster.replicas) if cluster.replicas else [hostname]
    return {
        "BACKENDAI_CLUSTER_SIZE": str(cluster.size if cluster.replicas else 1),
        "BACKENDAI_CLUSTER_REPLICAS": ",".join(f"{r}:{n}" for r, n in replicas.items()),
        "BACKENDAI_CLUSTER_HOSTS": ",".join(hosts),
    }


def write_ssh_files(config_dir: Path, cluster: ClusterSpec, *, uid: int, gid: int) -> None:
    """``config/ssh/id_cluster`` (0600) and ``id_cluster.pub`` (0644), both the kernel user's,
    plus ``port-mapping.json`` when the Manager sent an SSH port mapping.

    ``config/`` is the agent's (the kernel sees it read-only and cannot write in it), so no
    kernel-made link can be on the way; names are still opened without following links.
    """
    if cluster.ssh_keypair is None and not cluster.cluster_ssh_port_mapping:
        return
    ssh = config_dir / SSH_DIR
    with contextlib.suppress(FileExistsError):
        os.mkdir(ssh, 0o755)
    if ssh.is_symlink() or not ssh.is_dir():
        raise OSError(errno.ENOTDIR, "not a directory", str(ssh))
    if cluster.ssh_keypair is not None:
        keys = cluster.ssh_keypair
        _write(ssh, "id_cluster", _with_newline(keys.private_key).encode(), 0o600, uid, gid)
        _write(ssh, "id_cluster.pub", _with_newline(keys.public_key).encode(), 0o644, uid, gid)
    if cluster.cluster_ssh_port_mapping:
        _write(ssh, "port-mapping.json", json.dumps(cluster.cluster_ssh_port_mapping).encode(),
               0o644, None, None)


def _write(directory: Path, name: str, data: bytes, mode: int, uid: int | None,
           gid: int | None) -> None:
    """A fresh temp file, owned and moded through its descriptor, renamed over ``name``."""
    tmp = directory / f".{name}.{os.urandom(4).hex()}"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
    try:
        with os.fdopen(fd, "wb") as out:
            out.write(data)
            if uid is not None and gid is not None:
                os.fchown(out.fileno(), uid, gid)
            os.fchmod(out.fileno(), mode)
        os.replace(tmp, directory / name)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def _with_newline(text: str) -> str:
    # OpenSSH refuses a private key file whose last line has no newline.
    return text if text.endswith("\n") else text + "\n"
