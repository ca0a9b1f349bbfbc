"""EtcdConfigSource with user and password against a real etcd 3.4 of this module's own, with
auth enabled and tokens that expire after a second of disuse."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Iterator
from typing import Any

import aiohttp
import pytest
from support.procs import EtcdServer

from berth.errors import EtcdError
from berth.events.etcd import EtcdConfigSource

PASSWORD = "s3cret"


class ShortTokenEtcd(EtcdServer):
    def command(self, exe: str) -> list[str]:
        return [*super().command(exe), "--auth-token-ttl", "1"]


async def post(addr: str, path: str, body: dict[str, Any],
               token: str | None = None) -> tuple[int, dict[str, Any]]:
    headers = {"Authorization": token} if token else {}
    async with aiohttp.ClientSession() as http, http.post(
            f"http://{addr}{path}", json=body, headers=headers) as resp:
        return resp.status, await resp.json(content_type=None)


@pytest.fixture(scope="module")
def etcd_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EtcdServer]:
    with ShortTokenEtcd(tmp_path_factory.mktemp("etcd-auth")) as etcd:
        yield etcd


@pytest.fixture
async def auth_addr(etcd_server: EtcdServer) -> AsyncIterator[str]:
    addr = etcd_server.addr
    status, _ = await post(addr, "/v3/auth/authenticate", {"name": "root", "password": PASSWORD})
    if status != 200:  # the first test of the module turns auth on
        for path, body in (("/v3/auth/user/add", {"name": "root", "password": PASSWORD}),
                           ("/v3/auth/user/grant", {"user": "root", "role": "root"}),
                           ("/v3/auth/enable", {})):
            assert (await post(addr, path, body))[0] == 200, path
    yield addr


def ns() -> str:
    return f"auth-{uuid.uuid4().hex[:8]}"


async def test_an_expired_token_is_refreshed(auth_addr: str) -> None:
    async with EtcdConfigSource(auth_addr, ns(), "root", PASSWORD) as etcd:
        await etcd.put("config/redis/addr", "x")
        token = etcd._client._token
        await asyncio.sleep(2.5)  # past --auth-token-ttl
        status, reply = await post(auth_addr, "/v3/kv/range", {"key": "YQ=="}, token)
        assert (status, reply["code"]) == (401, 16), reply  # the old token is refused now
        assert await etcd.get("config/redis/addr") == "x"
        assert etcd._client._token != token


async def test_a_watch_opened_with_an_expired_token(auth_addr: str) -> None:
    async with EtcdConfigSource(auth_addr, ns(), "root", PASSWORD) as etcd:
        await asyncio.sleep(2.5)
        async with asyncio.TaskGroup() as tg:
            tg.create_task(etcd.wait_for_manager(timeout=5))
            await asyncio.sleep(0.5)
            await etcd.put("nodes/manager/m1", "up")


async def test_without_credentials_connect_fails_and_says_why(auth_addr: str) -> None:
    # etcd's status answers without a token: the connect reads once to find out
    with pytest.raises(EtcdError, match="authentication enabled.*user name is empty") as err:
        async with EtcdConfigSource(auth_addr, ns()):
            pass
    assert err.value.data["operation"] == "connect"


async def test_a_wrong_password_fails_at_connect(auth_addr: str) -> None:
    with pytest.raises(EtcdError, match="authentication failed") as err:
        async with EtcdConfigSource(auth_addr, ns(), "root", "wrong"):
            pass
    assert err.value.data["operation"] == "connect"
