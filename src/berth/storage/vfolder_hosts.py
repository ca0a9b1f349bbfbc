"""Resolve a vfolder mount's host path when the Manager did not send one.

Backend.AI's Manager asks the storage proxy for each vfolder's host path (``GET
/folder/mount``) and sends mounts with ``host_path`` set; Berth uses such mounts as they are. A
mount that arrives without ``host_path`` but with its vfolder ``host`` (``"{proxy}:{volume}"``,
Backend.AI's vfolder-host form) and ``vfid`` is resolved here, before the kernel is created,
from the global ``volumes`` configuration (etcd ``volumes/…``, or ``[volumes]`` in the file):

  * ``proxies.{name}.manager_api`` / ``secret`` / ``ssl_verify``: ask that storage proxy
    (``berth.storage.storage_proxy``) to mount the folder and say where;
  * a host without a proxy part: ``_mount`` (``mount``) and ``_fsprefix`` (``fsprefix``), the
    legacy layout ``{_mount}/{host}/{_fsprefix}/{vfid}[/{vfsubpath}]`` on a shared filesystem;
  * ``_default_host`` (``default_host``) stands in for a missing ``host``.

A mount that can be resolved by neither is refused (``MountRefused`` naming
``mounts[i].host_path``). The resolved path then passes the same checks as a sent one
(``vfolder-allowed-roots``, ``storage/vfolders.py``).
"""

from __future__ import annotations

import logging
import ssl
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from types import TracebackType
from typing import Any, Protocol, Self

from berth.errors import MountRefused
from berth.storage.storage_proxy import StorageProxyClient

__all__ = ["ProxyInfo", "VFolderHostResolver", "VolumesConfig", "legacy_host_path"]

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ProxyInfo:
    manager_api: str
    secret: str
    ssl_verify: bool = True


@dataclass(frozen=True)
class VolumesConfig:
    mount: Path | None = None
    fsprefix: str = ""
    default_host: str | None = None
    proxies: dict[str, ProxyInfo] = field(default_factory=dict)

    @classmethod
    def from_config(cls, raw: Mapping[str, Any]) -> VolumesConfig:
        """From etcd's ``volumes`` (``_mount``, ``manager_api``) or the file's normalised keys
        (``-mount``, ``manager-api``): ``_``/``-`` spellings are the same key."""
        vol = _norm(raw)
        proxies = {}
        for name, info in (vol.get("proxies") or {}).items():
            info = _norm(info) if isinstance(info, Mapping) else {}
            if info.get("manager_api"):
                proxies[str(name)] = ProxyInfo(
                    str(info["manager_api"]), str(info.get("secret", "")),
                    str(info.get("ssl_verify", True)).lower() not in ("false", "0", "no"))
        mount, host = vol.get("mount"), vol.get("default_host")
        return cls(Path(str(mount)) if mount not in (None, "") else None,
                   str(vol.get("fsprefix") or ""),
                   str(host) if host not in (None, "") else None, proxies)


def _norm(raw: Mapping[str, Any]) -> dict[str, Any]:
    return {str(k).replace("-", "_").lstrip("_"): v for k, v in raw.items()}


def legacy_host_path(mount: Path, host: str, fsprefix: str, vfid: str,
                     subpath: str = ".") -> Path:
    """``{mount}/{host}/{fsprefix}/{vfid}/{subpath}``; no part may climb out or be absolute."""
    if not host or "/" in host or host in (".", "..") or not vfid or vfid.startswith("/"):
        raise ValueError(f"unsafe vfolder host {host!r} or vfid {vfid!r}")
    parts = [*PurePosixPath(fsprefix.strip("/") or ".").parts, *PurePosixPath(vfid).parts,
             *PurePosixPath(subpath.strip("/") or ".").parts]
    if ".." in parts:
        raise ValueError(f"vfolder path climbs out: {parts}")
    return mount.joinpath(host, *(p for p in parts if p != "."))


class ProxyClient(Protocol):
    async def __aenter__(self) -> Self: ...

    async def __aexit__(self, et: type[BaseException] | None, e: BaseException | None,
                        tb: TracebackType | None) -> None: ...

    async def mount(self, volume: str, vfid: str, subpath: str = ".") -> str: ...


def _open_client(info: ProxyInfo) -> ProxyClient:
    context = None
    if not info.ssl_verify:
        context = ssl.create_default_context()
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    return StorageProxyClient(info.manager_api, info.secret, ssl_context=context)


class VFolderHostResolver:
    def __init__(self, volumes: VolumesConfig,
                 open_client: Callable[[ProxyInfo], ProxyClient] = _open_client) -> None:
        self.volumes = volumes
        self._open = open_client

    @staticmethod
    def needs(mount: Mapping[str, Any]) -> bool:
        return isinstance(mount, Mapping) and not mount.get("host_path")

    @classmethod
    def any_needed(cls, config: Mapping[str, Any]) -> bool:
        """Whether some mount of a kernel config lacks its host path."""
        mounts = config.get("mounts") if isinstance(config, Mapping) else None
        return isinstance(mounts, Sequence) and any(cls.needs(m) for m in mounts)

    async def resolve_config(self, config: Mapping[str, Any]) -> dict[str, Any]:
        """``config`` with every mount given a host path (unchanged when none needs one)."""
        mounts = config.get("mounts")
        if not isinstance(mounts, Sequence) or not self.any_needed(config):
            return dict(config)
        resolved = [dict(m) if not self.needs(m) else
                    {**m, "host_path": str(await self._resolve(m, i))}
                    for i, m in enumerate(mounts)]
        return {**config, "mounts": resolved}

    async def _resolve(self, mount: Mapping[str, Any], index: int) -> Path:
        where = f"mounts[{index}].host_path"
        host = str(mount.get("host") or self.volumes.default_host or "")
        vfid = str(mount.get("vfid") or "")
        subpath = str(mount.get("vfsubpath") or ".")
        if not host or not vfid:
            raise MountRefused("no host_path, and no vfolder host and vfid to resolve one",
                               field=where)
        proxy, sep, volume = host.partition(":")
        info = self.volumes.proxies.get(proxy) if sep else None
        if sep and info is None:
            raise MountRefused(f"vfolder host {host!r} names storage proxy {proxy!r}, which "
                               "is not in volumes/proxies", field=where, value=host)
        if info is not None:
            async with self._open(info) as client:
                path = Path(await client.mount(volume, vfid, subpath))
            log.info("vfolder %s (%s, %s): host path %s from storage proxy %s",
                     mount.get("name"), host, vfid, path, proxy)
            return path
        if self.volumes.mount is not None:
            try:
                path = legacy_host_path(self.volumes.mount, host, self.volumes.fsprefix, vfid,
                                        subpath)
            except ValueError as exc:
                raise MountRefused(str(exc), field=where, value=host) from None
            log.info("vfolder %s (%s, %s): host path %s under volumes/_mount",
                     mount.get("name"), host, vfid, path)
            return path
        raise MountRefused(f"no host_path, and vfolder host {host!r} names no storage proxy in "
                           "volumes/proxies and volumes/_mount is not set", field=where,
                           value=host)
