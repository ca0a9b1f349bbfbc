"""The etcd gateway client and EtcdConfigSource against an in-process stand-in of etcd's v3 JSON
gateway (aiohttp on a loopback port the kernel picks): shapes, error mapping, token refresh and
watch streams. The real etcd is in tests/integration/etcd."""

from __future__ import annotations

import asyncio
import base64
import json
import time
from collections import defaultdict
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest
from aiohttp import web

from berth.errors import EtcdError
from berth.events import etcd_gateway
from berth.events.etcd import EtcdConfigSource, _mapped
from berth.events.etcd_gateway import (
    ERRORS,
    EtcdGateway,
    Event,
    EventType,
    GatewayError,
    parse_watch_line,
    prefix_end,
)

UNAUTHENTICATED = {"error": "etcdserver: invalid auth token",
                   "message": "etcdserver: invalid auth token", "code": 16}


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def unb64(text: str) -> bytes:
    return base64.b64decode(text)


def line(obj: dict[str, Any]) -> bytes:
    return json.dumps(obj).encode() + b"\n"


class FakeEtcd:
    """What etcd 3.4's gateway answers, for the calls Berth makes: absent fields omitted, int64
    as strings. ``canned[path]`` replaces the next answer at ``path``; with ``password`` set,
    every KV and watch call needs the latest token; a watch streams what ``feed`` gets."""

    def __init__(self, password: str | None = None) -> None:
        self.kv: dict[bytes, bytes] = {}
        self.canned: dict[str, web.Response] = {}
        self.password = password
        self.token: str | None = None
        self.accept_tokens = True
        self.tokens_issued = 0
        self.calls: list[str] = []
        self.arrived: defaultdict[str, asyncio.Event] = defaultdict(asyncio.Event)
        self.feed: asyncio.Queue[bytes | None] = asyncio.Queue()
        self.port = 0

    @property
    def addr(self) -> str:
        return f"127.0.0.1:{self.port}"

    def expire_token(self) -> None:
        self.token = None

    async def handle(self, request: web.Request) -> web.StreamResponse:
        path = request.path
        self.calls.append(path)
        self.arrived[path].set()
        if path in self.canned:
            return self.canned.pop(path)
        body = await request.json()
        if path == "/v3/maintenance/status":
            return web.json_response({"version": "3.4.23"})
        if path == "/v3/auth/authenticate":
            return self.authenticate(body)
        authorized = self.password is None or (
            self.accept_tokens and self.token is not None
            and request.headers.get("Authorization") == self.token)
        if path == "/v3/watch":
            return await self.watch(request, authorized)
        if not authorized:
            return web.json_response(UNAUTHENTICATED, status=401)
        return web.json_response(self.kv_call(path, body))

    def authenticate(self, body: dict[str, Any]) -> web.Response:
        if body.get("password") != self.password:
            return web.json_response({"error": "etcdserver: authentication failed",
                                      "message": "etcdserver: authentication failed",
                                      "code": 3}, status=400)
        self.tokens_issued += 1
        self.token = f"token.{self.tokens_issued}"
        return web.json_response({"token": self.token})

    def kv_call(self, path: str, body: dict[str, Any]) -> dict[str, Any]:
        if path == "/v3/kv/put":
            self.kv[unb64(body["key"])] = unb64(body.get("value", ""))
            return {"header": {"revision": "2"}}
        keys = self.matching(body)
        if path == "/v3/kv/deleterange":
            for k in keys:
                del self.kv[k]
            return {"deleted": str(len(keys))} if keys else {}
        kvs = [{"key": b64(k), **({"value": b64(self.kv[k])} if self.kv[k] else {})}
               for k in keys]
        return {"kvs": kvs, "count": str(len(kvs))} if kvs else {}

    def matching(self, body: dict[str, Any]) -> list[bytes]:
        key = unb64(body["key"])
        if "range_end" not in body:
            return [key] if key in self.kv else []
        end = unb64(body["range_end"])
        return sorted(k for k in self.kv if key <= k < end)

    async def watch(self, request: web.Request, authorized: bool) -> web.StreamResponse:
        resp = web.StreamResponse()
        await resp.prepare(request)
        if not authorized:
            await resp.write(line({"result": {"created": True, "canceled": True,
                                              "cancel_reason": "rpc error: code = "
                                              "Unauthenticated desc = etcdserver: invalid "
                                              "auth token"}}))
            return resp
        await resp.write(line({"result": {"header": {"revision": "1"}, "created": True}}))
        while (chunk := await self.feed.get()) is not None:
            await resp.write(chunk)
        return resp


@pytest.fixture
async def fake() -> AsyncIterator[FakeEtcd]:
    etcd = FakeEtcd()
    app = web.Application()
    app.router.add_post("/{path:.*}", etcd.handle)
    runner = web.AppRunner(app, handler_cancellation=True)
    await runner.setup()
    try:
        await web.TCPSite(runner, "127.0.0.1", 0).start()
        etcd.port = runner.addresses[0][1]
        yield etcd
    finally:
        await runner.cleanup()


@pytest.mark.parametrize(("prefix", "end"), [(b"/sorna/x/", b"/sorna/x0"), (b"a\xff", b"b"),
                                             (b"\xff\xff", b"\0")])
def test_prefix_end(prefix: bytes, end: bytes) -> None:
    assert prefix_end(prefix) == end


async def test_the_key_layout_over_the_gateway_shapes(fake: FakeEtcd) -> None:
    async with EtcdConfigSource(fake.addr, "ns") as etcd:
        assert await etcd.get("config/redis/addr") is None  # a range with no "kvs"
        await etcd.put("config/redis/addr", "127.0.0.1:6379")
        await etcd.put("config/redis/password", "")  # an empty value has no "value"
        await etcd.put("config/redisX", "not under config/redis/")
        assert fake.kv[b"/sorna/ns/config/redis/addr"] == b"127.0.0.1:6379"
        assert await etcd.get("config/redis/password") == ""
        assert await etcd.get_prefix("config/redis") == {"addr": "127.0.0.1:6379",
                                                        "password": ""}
        await etcd.put_tree("nodes/agents/i-1", {"ip": "10.0.0.5"})
        await etcd.put("nodes/agents/i-1", "running")
        await etcd.deregister_agent("i-1")
        assert set(fake.kv) == {b"/sorna/ns/config/redis/addr", b"/sorna/ns/config/redis/password",
                                b"/sorna/ns/config/redisX"}


@pytest.mark.parametrize("reply", [
    web.json_response({"error": "etcdserver: request timed out",
                       "message": "etcdserver: request timed out", "code": 14}, status=503),
    web.Response(status=404, text="Not Found"),
    web.Response(status=500),
    web.Response(text="not json"),
    web.json_response(["not", "an", "object"]),
    web.json_response({"kvs": [{"key": "!!not base64"}]}),
    web.json_response({"kvs": [{"value": b64(b"no key")}]}),
    web.json_response({"kvs": "not a list"}),
], ids=["etcd-error", "404-text", "500-empty", "not-json", "json-list", "bad-base64",
        "kv-without-key", "kvs-not-list"])
async def test_every_bad_reply_is_an_etcd_error(fake: FakeEtcd, reply: web.Response) -> None:
    async with EtcdConfigSource(fake.addr, "ns") as etcd:
        fake.canned["/v3/kv/range"] = reply
        with pytest.raises(EtcdError) as err:
            await etcd.get("config/redis/addr")
    assert err.value.data == {"operation": "get", "key": "config/redis/addr",
                              "cause": "GatewayError"}


async def test_the_etcd_error_carries_etcds_message_and_code(fake: FakeEtcd) -> None:
    fake.canned["/v3/kv/put"] = web.json_response(
        {"error": "etcdserver: too many requests", "message": "etcdserver: too many requests",
         "code": 14}, status=503)
    async with EtcdGateway("127.0.0.1", fake.port) as gw:
        with pytest.raises(GatewayError, match="too many requests") as err:
            await gw.put(b"k", b"v")
    assert (err.value.status, err.value.code) == (503, 14)


@pytest.mark.parametrize("exc", [GatewayError("x"), aiohttp.ClientConnectionError("x"),
                                 ConnectionRefusedError("x"), TimeoutError()])
def test_every_error_of_the_gateway_is_mapped(exc: Exception) -> None:
    assert isinstance(exc, ERRORS)
    with pytest.raises(EtcdError) as err, _mapped("put", "a/b"):
        raise exc
    assert err.value.data == {"operation": "put", "key": "a/b", "cause": type(exc).__name__}


async def test_a_dead_address_fails_at_connect() -> None:
    with pytest.raises(EtcdError) as err:
        async with EtcdConfigSource("127.0.0.1:1", "ns", timeout=1):
            pass
    assert err.value.data == {"operation": "connect", "key": "",
                              "cause": "ClientConnectorError"}


async def test_a_silent_etcd_times_out(fake: FakeEtcd) -> None:
    async def never(request: web.Request) -> web.Response:
        await asyncio.sleep(30)
        raise AssertionError("not reached")
    app = web.Application()
    app.router.add_post("/{path:.*}", never)
    runner = web.AppRunner(app, handler_cancellation=True)
    await runner.setup()
    try:
        await web.TCPSite(runner, "127.0.0.1", 0).start()
        started = time.monotonic()
        with pytest.raises(EtcdError) as err:
            async with EtcdConfigSource(f"127.0.0.1:{runner.addresses[0][1]}", "ns", timeout=1):
                pass
        assert time.monotonic() - started < 3
        assert err.value.data["operation"] == "connect"
    finally:
        await runner.cleanup()


async def test_an_expired_token_is_refreshed_once(fake: FakeEtcd) -> None:
    fake.password = "pw"
    async with EtcdConfigSource(fake.addr, "ns", "root", "pw") as etcd:
        await etcd.put("a", "1")
        fake.expire_token()
        assert await etcd.get("a") == "1"
        assert fake.tokens_issued == 2
        assert fake.calls.count("/v3/kv/range") == 2  # the refused call, then its retry


async def test_a_token_refused_twice_is_an_etcd_error(fake: FakeEtcd) -> None:
    fake.password = "pw"
    async with EtcdConfigSource(fake.addr, "ns", "root", "pw") as etcd:
        fake.accept_tokens = False
        with pytest.raises(EtcdError, match="invalid auth token"):
            await etcd.get("a")
    assert fake.tokens_issued == 2  # at connect, then one refresh, no more
    assert fake.calls.count("/v3/kv/range") == 2


async def test_a_failed_refresh_is_taken_again_by_the_next_call(fake: FakeEtcd) -> None:
    fake.password = "pw"
    async with EtcdConfigSource(fake.addr, "ns", "root", "pw") as etcd:
        await etcd.put("a", "1")
        fake.expire_token()
        fake.canned["/v3/auth/authenticate"] = web.Response(status=503)  # etcd restarting
        with pytest.raises(EtcdError):
            await etcd.get("a")
        assert await etcd.get("a") == "1"
    assert fake.tokens_issued == 2


async def test_a_wrong_password_fails_at_connect(fake: FakeEtcd) -> None:
    fake.password = "pw"
    with pytest.raises(EtcdError, match="authentication failed") as err:
        async with EtcdConfigSource(fake.addr, "ns", "root", "wrong"):
            pass
    assert err.value.data["operation"] == "connect"
    assert fake.calls == ["/v3/auth/authenticate"]


async def test_no_credentials_for_an_etcd_that_asks_for_them_fail_at_connect(
        fake: FakeEtcd) -> None:
    fake.password = "pw"
    with pytest.raises(EtcdError, match="authentication enabled") as err:
        async with EtcdConfigSource(fake.addr, "ns"):
            pass
    assert err.value.data["operation"] == "connect"
    assert fake.calls == ["/v3/maintenance/status", "/v3/kv/range"]


async def test_watch_events_however_the_stream_is_chunked(fake: FakeEtcd) -> None:
    put = line({"result": {"events": [{"kv": {"key": b64(b"k1"), "value": b64(b"up")}}]}})
    delete = line({"result": {"events": [{"type": "DELETE", "kv": {"key": b64(b"k1")}}]}})
    async with EtcdGateway("127.0.0.1", fake.port) as gw, await gw.watch(b"k", b"l") as watch:
        for chunk in (put[:10], put[10:] + delete[:5], delete[5:]):
            fake.feed.put_nowait(chunk)
        events = []
        async for event in watch:
            events.append(event)
            if len(events) == 2:
                break
    assert events == [Event(EventType.PUT, b"k1", b"up"), Event(EventType.DELETE, b"k1", b"")]


@pytest.mark.parametrize(("raw", "message"), [
    (b"", "closed the watch stream"),
    (line({"result": {"canceled": True, "cancel_reason": "mvcc: compacted"}}), "compacted"),
    (line({"error": {"grpc_code": 14, "message": "transport is closing"}}), "transport is"),
    (b"{not json\n", "malformed"),
], ids=["end", "cancel", "stream-error", "not-json"])
async def test_a_watch_that_breaks_is_an_error(fake: FakeEtcd, raw: bytes, message: str) -> None:
    async with EtcdGateway("127.0.0.1", fake.port) as gw, await gw.watch(b"k") as watch:
        fake.feed.put_nowait(raw)
        fake.feed.put_nowait(None)
        with pytest.raises(GatewayError, match=message):
            async for _ in watch:
                pass


def test_a_watch_line_without_result_is_malformed() -> None:
    with pytest.raises(GatewayError, match="malformed"):
        parse_watch_line(b'{"header": {}}')


async def test_a_watch_refused_for_its_token_is_reopened(fake: FakeEtcd) -> None:
    fake.password = "pw"
    async with EtcdGateway("127.0.0.1", fake.port, user="root", password="pw") as gw:
        fake.expire_token()
        async with await gw.watch(b"k"):
            pass
    assert fake.calls.count("/v3/watch") == 2
    assert fake.tokens_issued == 2


async def test_wait_for_manager_opens_the_watch_before_it_reads(fake: FakeEtcd) -> None:
    async with EtcdConfigSource(fake.addr, "ns") as etcd:
        fake.arrived.clear()  # the connect's own read
        waiter = asyncio.create_task(etcd.wait_for_manager(timeout=5))
        await asyncio.wait_for(fake.arrived["/v3/kv/range"].wait(), 3)
        assert fake.calls[-2:] == ["/v3/watch", "/v3/kv/range"]
        event = {"kv": {"key": b64(b"/sorna/ns/nodes/manager/m1"), "value": b64(b"starting")}}
        fake.feed.put_nowait(line({"result": {"events": [event]}}))
        await asyncio.sleep(0.1)
        assert not waiter.done()
        event["kv"]["value"] = b64(b"up")
        fake.feed.put_nowait(line({"result": {"events": [event]}}))
        await asyncio.wait_for(waiter, 3)
        fake.kv[b"/sorna/ns/nodes/manager/m1"] = b"up"
        await etcd.wait_for_manager(timeout=1)  # already there: returns at once


async def test_wait_for_manager_when_the_watch_breaks(fake: FakeEtcd) -> None:
    async with EtcdConfigSource(fake.addr, "ns") as etcd:
        fake.feed.put_nowait(None)
        with pytest.raises(EtcdError) as err:
            await etcd.wait_for_manager(timeout=5)
    assert err.value.data["operation"] == "watch"


async def test_a_closed_client_refuses_calls(fake: FakeEtcd) -> None:
    etcd = EtcdConfigSource(fake.addr, "ns")
    async with etcd:
        pass
    with pytest.raises(EtcdError, match="closed"):
        await etcd.get("a")


class _Chunks:
    def __init__(self, *chunks: bytes) -> None:
        self.chunks = chunks

    async def iter_any(self) -> AsyncIterator[bytes]:
        for chunk in self.chunks:
            yield chunk


async def test_a_watch_message_without_end_is_refused_at_the_cap(
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(etcd_gateway, "MAX_WATCH_MESSAGE", 10)
    lines = etcd_gateway._lines(_Chunks(b'{"a":1}\n{"b"', b":2}\n", b"x" * 11))  # type: ignore[arg-type]
    assert [line async for line in _take(lines, 2)] == [b'{"a":1}', b'{"b":2}']
    with pytest.raises(GatewayError, match="over 10 bytes"):
        await anext(lines)


async def _take(lines: AsyncIterator[bytes], n: int) -> AsyncIterator[bytes]:
    for _ in range(n):
        yield await anext(lines)


async def test_a_value_that_is_not_utf8_is_an_etcd_error(fake: FakeEtcd) -> None:
    fake.kv[b"/sorna/ns/config/redis/addr"] = b"\xff\xfe:6379"
    async with EtcdConfigSource(fake.addr, "ns") as etcd:
        with pytest.raises(EtcdError, match="UnicodeDecodeError"):
            await etcd.get("config/redis/addr")
        with pytest.raises(EtcdError, match="UnicodeDecodeError"):
            await etcd.get_prefix("config/redis")
