"""Client of the storage proxy's manager-facing API (Backend.AI storage-proxy, port 6021).

Every call is a JSON request with the ``X-BackendAI-Storage-Auth-Token`` header; the proxy
answers JSON.  Following Backend.AI, the folder calls are ``GET``/``POST`` with a JSON body:

  * ``GET  /volumes``              → ``{"volumes": [{name, backend, path, fsprefix, capabilities}]}``
  * ``GET  /folder/mount``         ``{volume, vfid, subpath}`` → ``{"path": host path}``
  * ``POST /folder/unmount``       ``{volume, vfid}`` → ``{}`` (Berth: release a mount)
  * ``GET  /folder/usage``         ``{volume, vfid}`` → ``{file_count, used_bytes}``
  * ``GET  /folder/fs-usage``      ``{volume}`` → ``{capacity_bytes, used_bytes}``
  * ``GET  /folder/metadata``      ``{volume, vfid}`` → the folder's metadata object

Non-2xx answers and transport failures become ``StorageProxyError`` with the status, the
path and the proxy's message.
"""

from __future__ import annotations

import logging
import ssl
from dataclasses import dataclass
from types import TracebackType
from typing import Any, Self

import aiohttp

from berth.errors import StorageError

log = logging.getLogger(__name__)

AUTH_HEADER = "X-BackendAI-Storage-Auth-Token"


class StorageProxyError(StorageError):
    def __init__(self, message: str, *, path: str, status: int | None = None) -> None:
        super().__init__(message, path=path, status=status)
        self.path = path
        self.status = status


@dataclass(frozen=True)
class VolumeInfo:
    name: str
    backend: str
    path: str
    fsprefix: str
    capabilities: tuple[str, ...]


@dataclass(frozen=True)
class FolderUsage:
    file_count: int
    used_bytes: int


class StorageProxyClient:
    """``async with StorageProxyClient(url, token) as sp: await sp.mount(vol, vfid)``."""

    def __init__(self, base_url: str, token: str, *, timeout: float = 30.0,
                 ssl_context: ssl.SSLContext | None = None) -> None:
        self._base = base_url.rstrip("/")
        self._token = token
        self._timeout = aiohttp.ClientTimeout(total=timeout)
        self._ssl = ssl_context
        self._session: aiohttp.ClientSession | None = None

    async def __aenter__(self) -> Self:
        self._session = aiohttp.ClientSession(timeout=self._timeout,
                                              headers={AUTH_HEADER: self._token})
        return self

    async def __aexit__(self, et: type[BaseException] | None, e: BaseException | None,
                        tb: TracebackType | None) -> None:
        await self.close()

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    async def _request(self, method: str, path: str, body: dict[str, Any] | None = None
                       ) -> Any:
        if self._session is None:
            raise StorageProxyError("client is not open (use 'async with')", path=path)
        try:
            async with self._session.request(method, self._base + path, json=body,
                                             ssl=self._ssl or True) as resp:
                data = await resp.json(content_type=None) if resp.content_length != 0 else None
                if resp.status >= 400:
                    raise StorageProxyError(_message(data, resp.reason), path=path,
                                            status=resp.status)
                return data if data is not None else {}
        except (aiohttp.ClientError, TimeoutError, ValueError) as exc:
            raise StorageProxyError(f"storage proxy {method} {path}: {exc!r}",
                                    path=path) from exc

    async def list_volumes(self) -> list[VolumeInfo]:
        data = await self._request("GET", "/volumes")
        return [VolumeInfo(v["name"], v.get("backend", ""), v.get("path", ""),
                           v.get("fsprefix", ""), tuple(v.get("capabilities", [])))
                for v in data.get("volumes", [])]

    async def mount(self, volume: str, vfid: str, subpath: str = ".") -> str:
        """Ask the proxy for (and make available) the host path of a vfolder."""
        data = await self._request("GET", "/folder/mount",
                                   {"volume": volume, "vfid": vfid, "subpath": subpath})
        log.info("vfolder %s/%s mounted at %s", volume, vfid, data["path"])
        return str(data["path"])

    async def unmount(self, volume: str, vfid: str) -> None:
        await self._request("POST", "/folder/unmount", {"volume": volume, "vfid": vfid})
        log.info("vfolder %s/%s unmounted", volume, vfid)

    async def usage(self, volume: str, vfid: str) -> FolderUsage:
        data = await self._request("GET", "/folder/usage", {"volume": volume, "vfid": vfid})
        return FolderUsage(int(data["file_count"]), int(data["used_bytes"]))

    async def fs_usage(self, volume: str) -> dict[str, int]:
        data = await self._request("GET", "/folder/fs-usage", {"volume": volume})
        return {k: int(v) for k, v in data.items()}

    async def metadata(self, volume: str, vfid: str) -> dict[str, Any]:
        data = await self._request("GET", "/folder/metadata", {"volume": volume, "vfid": vfid})
        return dict(data)


def _message(data: Any, reason: str | None) -> str:
    if isinstance(data, dict):
        for key in ("msg", "title", "error", "message"):
            if data.get(key):
                return str(data[key])
    return reason or "storage proxy error"
