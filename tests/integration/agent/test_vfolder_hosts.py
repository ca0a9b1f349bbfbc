"""Issue 12 items 5 and 7b through the wired agent: a vfolder mount sent without `host_path` is
resolved at create from the `volumes` configuration — through the storage proxy named in
`volumes/proxies` (a local stand-in of its manager API, `GET /folder/mount`), or under the
legacy `volumes/_mount` + `_fsprefix` layout — and the kernel's container sees that folder."""

from __future__ import annotations

import os
import subprocess
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from support.net import serve_app

from berth.errors import MountRefused
from berth.storage.storage_proxy import AUTH_HEADER

from .conftest import AgentFactory, containers, kernel_config

UID = 9001
TOKEN = "sp-secret-agtest"


class ProxyStandIn:
    """The storage proxy's manager-facing `GET /folder/mount`, answering under ``root``."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.calls: list[dict[str, Any]] = []

    async def mount(self, request: web.Request) -> web.Response:
        if request.headers.get(AUTH_HEADER) != TOKEN:
            return web.json_response({"msg": "bad token"}, status=401)
        body = await request.json()
        self.calls.append(body)
        return web.json_response({"path": str(self.root / body["volume"] / body["vfid"])})


@pytest.fixture
async def proxy(tmp_path: Path) -> AsyncIterator[tuple[ProxyStandIn, str]]:
    stand_in = ProxyStandIn(tmp_path / "vfroot" / "proxied")
    app = web.Application()
    app.router.add_get("/folder/mount", stand_in.mount)
    async with serve_app(app) as url:
        yield stand_in, url


def folder(path: Path, content: str) -> None:
    path.mkdir(parents=True)
    (path / "hello.txt").write_text(content)
    os.chown(path, UID, UID)


def cat(container_id: str, path: str) -> str:
    proc = subprocess.run(["docker", "exec", container_id, "busybox", "cat", path],
                          check=False, capture_output=True, text=True, timeout=30)
    return proc.stdout + proc.stderr


@pytest.mark.timeout(120)
async def test_mounts_without_host_path_resolve_by_proxy_or_legacy_layout(
        agent_factory: AgentFactory, proxy: tuple[ProxyStandIn, str], tmp_path: Path) -> None:
    stand_in, url = proxy
    vroot = tmp_path / "vfroot"
    folder(vroot / "proxied" / "vol1" / "f1", "from the proxy\n")
    folder(vroot / "legacy" / "nfs1" / "data" / "f2", "from the legacy layout\n")
    agent = await agent_factory(
        f'[volumes]\n_mount = "{vroot / "legacy"}"\n_fsprefix = "data"\n'
        f'[volumes.proxies.sp1]\nmanager_api = "{url}"\nsecret = "{TOKEN}"\n',
        container_toml=f'vfolder-allowed-roots = ["{vroot}"]')

    config = kernel_config()
    config["mounts"] = [
        {"name": "viaproxy", "host": "sp1:vol1", "vfid": "f1", "mount_perm": "rw"},
        {"name": "legacy", "host": "nfs1", "vfid": "f2", "mount_perm": "ro"},
    ]
    kid = str(uuid.uuid4())
    async with agent.client() as c:
        created = await c.create_kernels(kid, [kid], [config], {})
        cid = created[0]["container_id"]
        assert cat(cid, "/home/work/viaproxy/hello.txt") == "from the proxy\n"
        assert cat(cid, "/home/work/legacy/hello.txt") == "from the legacy layout\n"
        await c.destroy_kernel(kid, kid)
    assert stand_in.calls == [{"volume": "vol1", "vfid": "f1", "subpath": "."}]

    for bad, field in (({"name": "x", "host": "nosuchproxy:vol1", "vfid": "f1"},
                        "mounts[0].host_path"),
                       ({"name": "x", "host": "nfs1"}, "mounts[0].host_path"),
                       ({"name": "x", "host": "nfs1", "vfid": "../../etc"},
                        "mounts[0].host_path")):
        config = kernel_config()
        config["mounts"] = [{**bad, "mount_perm": "ro"}]
        kid = str(uuid.uuid4())
        async with agent.client() as c:
            with pytest.raises(MountRefused) as info:
                await c.create_kernels(kid, [kid], [config], {})
        assert info.value.data["field"] == field, info.value
        assert not containers(agent.agent_id, kid)
