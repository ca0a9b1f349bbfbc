"""The server's request handling end to end through the in-memory loopback (no sockets)."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from berth.client import AgentClient
from berth.errors import (
    ConfigError,
    InvalidArgument,
    KernelNotFound,
    MethodNotFound,
    ProtocolError,
    RequestTooLarge,
    RPCTimeout,
)
from berth.rpc import HandlerRegistry, RPCServer, codec
from berth.rpc.fake import FakeAgent, Loopback
from berth.rpc.server import UNKNOWN_METHOD


class Harness:
    def __init__(self, **server_opts: Any) -> None:
        self.hub = Loopback()
        self.agent = FakeAgent()
        self.events: list[tuple[str, BaseException | None]] = []
        self.server = RPCServer(HandlerRegistry(self.agent), "127.0.0.1:0", plain=True,
                                transport=self.hub.server_transport(),
                                on_request=lambda m, d, e: self.events.append((m, e)),
                                **server_opts)

    def client(self, **opts: Any) -> AgentClient:
        return AgentClient(transport=self.hub.client_transport(), **opts)


@pytest.fixture
async def harness() -> Any:
    h = Harness(max_body_size=4096, request_timeout=0.5)
    await h.server.start()
    yield h
    await h.server.close()


def test_curve_is_required_unless_plain() -> None:
    with pytest.raises(ConfigError):
        RPCServer(HandlerRegistry(FakeAgent()), "127.0.0.1:0")


async def test_typed_errors_and_the_server_keeps_serving(harness: Harness) -> None:
    async with harness.client() as c:
        assert await c.ping("a") == "a"
        with pytest.raises(KernelNotFound) as nf:
            await c.get_logs("missing")
        assert nf.value.kernel_id == "missing"
        with pytest.raises(MethodNotFound):
            await c.call("no_such_method")
        with pytest.raises(InvalidArgument):
            await c.call("release_port", "not-an-int")
        with pytest.raises(RequestTooLarge):
            await c.call("ping", "x" * 10000)
        with pytest.raises(InvalidArgument, match="not valid UTF-8"):  # refused before it is sent
            await c.ping("caf\udce9")
        assert await c.ping("still") == "still"
    outcomes = [type(e).__name__ if e else "ok" for _, e in harness.events]
    assert "RequestTooLarge" in outcomes and "MethodNotFound" in outcomes
    methods = {m for m, _ in harness.events}  # metric labels: no client-chosen names
    assert "no_such_method" not in methods and UNKNOWN_METHOD in methods and "ping" in methods


async def test_timeout_is_reported_per_request(harness: Harness) -> None:
    async with harness.client() as c:
        await c.create_kernels("s", ["k"], [{"image": {"canonical": "i"}}], {})
        with pytest.raises(RPCTimeout):
            await c.execute_code("k", "sleep 5")
        assert await c.ping() == "ping"


async def test_garbage_frames_get_error_replies_or_are_dropped(harness: Harness) -> None:
    peer = b"raw"
    inbox: asyncio.Queue[list[bytes]] = asyncio.Queue()
    harness.hub.to_clients[peer] = inbox
    good_header = codec.encode_header(codec.Header(codec.MsgType.FUNCTION, "ping", "", 9))
    for frames in ([peer, b"UPPER", good_header, b"\xc1"], [peer, b"UPPER", b"\xc1", b""],
                   [peer, b"WHAT", b"", b""], [peer], [peer, b"UPPER", good_header]):
        harness.hub.to_server.put_nowait(frames)
    harness.hub.to_server.put_nowait([peer, b"PING", b"h", b"b"])
    replies = [await asyncio.wait_for(inbox.get(), 2) for _ in range(2)]
    kinds = [r[0] for r in replies]
    assert sorted(kinds) == [b"PONG", b"UPPER"]
    assert replies[kinds.index(b"PONG")][1:] == [b"h", b"b"]
    assert inbox.empty()  # the unaddressable ones were dropped, not answered
    errors = [codec.decode_reply(r[1], r[2]) for r in replies if r[0] == b"UPPER"]
    assert all(e.header.type is codec.MsgType.ERROR and e.header.seq == 9 for e in errors)


async def test_error_reply_reaches_client_as_protocol_error(harness: Harness) -> None:
    async with harness.client() as c:
        header = codec.encode_header(codec.Header(codec.MsgType.FUNCTION, "ping", "", 10**6))
        fut = asyncio.get_running_loop().create_future()
        c._pending[("ping", "", 10**6)] = fut
        await c._transport.send([codec.UPPER, header, b"\x93"])
        reply = await asyncio.wait_for(fut, 2)
        with pytest.raises(ProtocolError):
            from berth.client.client import _unwrap
            _unwrap(reply)


async def test_concurrent_requests_run_in_parallel(harness: Harness) -> None:
    async with harness.client(timeout=5) as c:
        await c.create_kernels("s", ["k"], [{"image": {"canonical": "i"}}], {})
        loop = asyncio.get_running_loop()
        started = loop.time()
        results = await asyncio.gather(*(c.execute_code("k", "sleep 0.2") for _ in range(20)))
        assert len(results) == 20 and loop.time() - started < 0.45


async def test_refused_handshake_is_authentication_failure(harness: Harness) -> None:
    from berth.errors import AuthenticationFailed
    client = AgentClient(transport=harness.hub.client_transport(refuse=True),
                         handshake_timeout=0.1)
    with pytest.raises(AuthenticationFailed):
        async with client:
            pass
    assert harness.agent.calls == []
