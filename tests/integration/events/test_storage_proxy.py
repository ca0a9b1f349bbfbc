"""StorageProxyClient against a small local aiohttp server implementing the manager API."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import pytest
from aiohttp import web
from support.net import serve_app

from berth.storage.storage_proxy import AUTH_HEADER, StorageProxyClient, StorageProxyError

from .conftest import free_port

TOKEN = "sp-secret"
BODY: web.RequestKey[Any] = web.RequestKey("body", object)


class FakeProxy:
    def __init__(self) -> None:
        self.mounted: dict[tuple[str, str], str] = {}
        self.calls: list[tuple[str, str, Any]] = []

    @web.middleware
    async def auth(self, request: web.Request, handler: Any) -> web.StreamResponse:
        if request.headers.get(AUTH_HEADER) != TOKEN:
            return web.json_response({"msg": "bad token"}, status=401)
        body = await request.json() if request.can_read_body else None
        self.calls.append((request.method, request.path, body))
        request[BODY] = body
        resp: web.StreamResponse = await handler(request)
        return resp

    async def volumes(self, request: web.Request) -> web.Response:
        return web.json_response({"volumes": [{"name": "local", "backend": "vfs",
                                               "path": "/vfroot/local", "fsprefix": "",
                                               "capabilities": ["vfolder", "quota"]}]})

    async def mount(self, request: web.Request) -> web.Response:
        b = request[BODY]
        if b["volume"] != "local":
            return web.json_response({"msg": f"unknown volume {b['volume']}"}, status=404)
        path = f"/vfroot/local/{b['vfid']}/{b['subpath']}".rstrip("/.")
        self.mounted[(b["volume"], b["vfid"])] = path
        return web.json_response({"path": path})

    async def unmount(self, request: web.Request) -> web.Response:
        b = request[BODY]
        self.mounted.pop((b["volume"], b["vfid"]))
        return web.Response(status=204)

    async def usage(self, request: web.Request) -> web.Response:
        return web.json_response({"file_count": 3, "used_bytes": 4096})

    async def fs_usage(self, request: web.Request) -> web.Response:
        return web.json_response({"capacity_bytes": 10**9, "used_bytes": 10**6})

    async def metadata(self, request: web.Request) -> web.Response:
        return web.json_response({"vfid": request[BODY]["vfid"], "owner": "u1"})


@pytest.fixture
async def proxy() -> AsyncIterator[tuple[FakeProxy, str]]:
    fake = FakeProxy()
    app = web.Application(middlewares=[fake.auth])
    app.router.add_get("/volumes", fake.volumes)
    app.router.add_get("/folder/mount", fake.mount)
    app.router.add_post("/folder/unmount", fake.unmount)
    app.router.add_get("/folder/usage", fake.usage)
    app.router.add_get("/folder/fs-usage", fake.fs_usage)
    app.router.add_get("/folder/metadata", fake.metadata)
    async with serve_app(app) as url:
        yield fake, url


async def test_mount_usage_metadata_unmount(proxy: tuple[FakeProxy, str]) -> None:
    fake, url = proxy
    async with StorageProxyClient(url, TOKEN) as sp:
        vols = await sp.list_volumes()
        assert vols[0].name == "local" and vols[0].capabilities == ("vfolder", "quota")
        path = await sp.mount("local", "vf1", "data")
        assert path == "/vfroot/local/vf1/data" and ("local", "vf1") in fake.mounted
        assert (await sp.usage("local", "vf1")).used_bytes == 4096
        assert (await sp.fs_usage("local"))["capacity_bytes"] == 10**9
        assert (await sp.metadata("local", "vf1"))["owner"] == "u1"
        await sp.unmount("local", "vf1")
    assert fake.mounted == {}
    assert ("GET", "/folder/mount", {"volume": "local", "vfid": "vf1", "subpath": "data"}) \
        in fake.calls


async def test_errors_carry_status_and_message(proxy: tuple[FakeProxy, str]) -> None:
    _, url = proxy
    async with StorageProxyClient(url, TOKEN) as sp:
        with pytest.raises(StorageProxyError) as ei:
            await sp.mount("nope", "vf1")
    assert ei.value.status == 404 and "unknown volume" in str(ei.value)
    async with StorageProxyClient(url, "wrong") as sp:
        with pytest.raises(StorageProxyError) as ei:
            await sp.list_volumes()
    assert ei.value.status == 401
    async with StorageProxyClient(f"http://127.0.0.1:{free_port()}", TOKEN, timeout=2) as sp:
        with pytest.raises(StorageProxyError) as ei:
            await sp.list_volumes()
    assert ei.value.status is None and ei.value.path == "/volumes"
