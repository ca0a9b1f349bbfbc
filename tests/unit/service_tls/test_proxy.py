"""TLSServiceProxy against loopback servers owned by the test, with a self-signed
certificate made at test time by openssl (the cryptography package is not installed)."""

from __future__ import annotations

import asyncio
import hashlib
import os
import ssl
import subprocess
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path

import pytest

from berth.errors import ConfigError, InvalidArgument
from berth.network.service_tls import ProxyListenFailed, TLSServiceProxy, make_server_context
from support.procs import free_port as unused_port

Handler = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]


@dataclass(frozen=True)
class CertPair:
    cert: Path
    key: Path


@pytest.fixture(scope="session")
def cert_pair(tmp_path_factory: pytest.TempPathFactory) -> CertPair:
    root = tmp_path_factory.mktemp("service-tls")
    cert, key = root / "cert.pem", root / "key.pem"
    done = subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
         "-nodes", "-days", "1", "-subj", "/CN=localhost", "-keyout", str(key), "-out", str(cert),
         "-addext", "subjectAltName=IP:127.0.0.1,DNS:localhost"],
        check=False, capture_output=True, text=True)
    if done.returncode:
        pytest.fail(f"openssl could not make a test certificate: {done.stderr}")
    return CertPair(cert, key)


@pytest.fixture
def client_ctx(cert_pair: CertPair) -> ssl.SSLContext:
    """Trusts only the test certificate, and checks the host name against it."""
    return ssl.create_default_context(cafile=str(cert_pair.cert))


@pytest.fixture
async def proxy(cert_pair: CertPair) -> AsyncIterator[TLSServiceProxy]:
    async with TLSServiceProxy(make_server_context(cert_pair.cert, cert_pair.key),
                               shutdown_timeout=2.0) as p:
        yield p


async def echo(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    """Sends back 'ECHO ' and then every byte it gets, until the client's EOF."""
    try:
        writer.write(b"ECHO ")
        while data := await reader.read(65536):
            writer.write(data)
            await writer.drain()
    finally:
        writer.close()


class Upstream:
    """A plain TCP server on 127.0.0.1 running `handler` for each connection."""

    def __init__(self, handler: Handler) -> None:
        self.handler = handler
        self.server: asyncio.Server | None = None
        self.accepted = 0

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.accepted += 1
        await self.handler(reader, writer)

    async def start(self) -> int:
        self.server = await asyncio.start_server(self._handle, "127.0.0.1", 0)
        return int(self.server.sockets[0].getsockname()[1])

    async def stop(self) -> None:
        if self.server is not None:
            self.server.close()
            await self.server.wait_closed()


@pytest.fixture
async def upstream_factory() -> AsyncIterator[Callable[[Handler], Awaitable[tuple[Upstream, int]]]]:
    made: list[Upstream] = []

    async def make(handler: Handler) -> tuple[Upstream, int]:
        up = Upstream(handler)
        made.append(up)
        return up, await up.start()

    yield make
    for up in made:
        await up.stop()


MakeUpstream = Callable[[Handler], Awaitable[tuple[Upstream, int]]]
Conn = tuple[asyncio.StreamReader, asyncio.StreamWriter]


async def tls_connect(port: int, ctx: ssl.SSLContext) -> Conn:
    return await asyncio.open_connection("127.0.0.1", port, ssl=ctx)


async def hang_up(writer: asyncio.StreamWriter) -> None:
    writer.close()
    try:
        await asyncio.wait_for(writer.wait_closed(), 5)
    except (OSError, TimeoutError):
        writer.transport.abort()


async def proxied_echo(proxy: TLSServiceProxy, make_upstream: MakeUpstream,
                       name: str = "svc") -> tuple[Upstream, int]:
    up, target = await make_upstream(echo)
    return up, await proxy.add(name, "127.0.0.1", 0, "127.0.0.1", target)


async def test_bytes_flow_both_ways_over_tls_1_2_or_newer(
        proxy: TLSServiceProxy, upstream_factory: MakeUpstream,
        client_ctx: ssl.SSLContext) -> None:
    up, port = await proxied_echo(proxy, upstream_factory)
    reader, writer = await tls_connect(port, client_ctx)
    writer.write(b"hello")
    await writer.drain()
    assert await reader.readexactly(10) == b"ECHO hello"
    assert writer.get_extra_info("ssl_object").version() in {"TLSv1.2", "TLSv1.3"}
    assert proxy.routes["svc"].listen_port == port
    assert up.accepted == 1
    await hang_up(writer)


async def test_ten_megabytes_arrive_intact_both_ways(
        proxy: TLSServiceProxy, upstream_factory: MakeUpstream,
        client_ctx: ssl.SSLContext) -> None:
    _, port = await proxied_echo(proxy, upstream_factory)
    payload = os.urandom(10 * 1024 * 1024)
    reader, writer = await tls_connect(port, client_ctx)

    async def send() -> None:
        for i in range(0, len(payload), 1 << 20):
            writer.write(payload[i:i + (1 << 20)])
            await writer.drain()

    async with asyncio.TaskGroup() as tg:
        tg.create_task(send())
        echoed = await reader.readexactly(5 + len(payload))
    assert echoed[:5] == b"ECHO "
    assert hashlib.sha256(echoed[5:]).digest() == hashlib.sha256(payload).digest()
    await hang_up(writer)


async def test_many_concurrent_connections_each_get_their_own_bytes(
        proxy: TLSServiceProxy, upstream_factory: MakeUpstream,
        client_ctx: ssl.SSLContext) -> None:
    up, port = await proxied_echo(proxy, upstream_factory)

    async def one(i: int) -> bytes:
        reader, writer = await tls_connect(port, client_ctx)
        body = f"client-{i:03d}-".encode() * 100
        writer.write(body)
        await writer.drain()
        got = await reader.readexactly(5 + len(body))
        await hang_up(writer)
        return got[5:] if got[5:] == body else b"mismatch"

    results = await asyncio.gather(*(one(i) for i in range(60)))
    assert all(r != b"mismatch" for r in results)
    assert len(set(results)) == 60
    assert up.accepted == 60


async def test_service_eof_ends_the_client_connection_after_the_whole_response(
        proxy: TLSServiceProxy, upstream_factory: MakeUpstream,
        client_ctx: ssl.SSLContext) -> None:
    body = b"x" * 300_000

    async def http_once(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"\r\n\r\n")
        writer.write(b"HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: %d\r\n\r\n"
                     % len(body) + body)
        await writer.drain()
        writer.close()

    _, target = await upstream_factory(http_once)
    port = await proxy.add("web", "127.0.0.1", 0, "127.0.0.1", target)
    reader, writer = await tls_connect(port, client_ctx)
    writer.write(b"GET / HTTP/1.1\r\nHost: localhost\r\n\r\n")
    response = await asyncio.wait_for(reader.read(), 10)  # to EOF: the proxy closed
    assert response.startswith(b"HTTP/1.1 200 OK\r\n")
    assert response.endswith(body)
    await hang_up(writer)
    await _until(lambda: proxy.connection_count == 0)


async def test_unreachable_service_gets_502(
        proxy: TLSServiceProxy, client_ctx: ssl.SSLContext) -> None:
    port = await proxy.add("down", "127.0.0.1", 0, "127.0.0.1", unused_port())
    reader, writer = await tls_connect(port, client_ctx)
    response = await asyncio.wait_for(reader.read(), 10)
    assert response.startswith(b"HTTP/1.1 502 Bad Gateway\r\n")
    await hang_up(writer)


async def test_unreachable_service_without_502_just_closes(
        cert_pair: CertPair, client_ctx: ssl.SSLContext) -> None:
    ctx = make_server_context(cert_pair.cert, cert_pair.key)
    async with TLSServiceProxy(ctx, bad_gateway=None) as proxy:
        port = await proxy.add("down", "127.0.0.1", 0, "127.0.0.1", unused_port())
        reader, writer = await tls_connect(port, client_ctx)
        assert await asyncio.wait_for(reader.read(), 10) == b""
        await hang_up(writer)


async def test_remove_stops_accepting_and_drops_its_connections(
        proxy: TLSServiceProxy, upstream_factory: MakeUpstream,
        client_ctx: ssl.SSLContext) -> None:
    _, port = await proxied_echo(proxy, upstream_factory, "a")
    _, other = await proxied_echo(proxy, upstream_factory, "b")
    reader, writer = await tls_connect(port, client_ctx)
    assert await reader.readexactly(5) == b"ECHO "
    assert await proxy.remove("a") is True
    assert "a" not in proxy.routes
    with pytest.raises(OSError):
        await tls_connect(port, client_ctx)
    assert await _read_or_reset(reader) == b""  # the open connection was closed too
    await hang_up(writer)
    assert await proxy.remove("a") is False
    r2, w2 = await tls_connect(other, client_ctx)  # the other route is untouched
    assert await r2.readexactly(5) == b"ECHO "
    await hang_up(w2)


async def test_close_leaves_no_tasks_and_no_listeners(
        cert_pair: CertPair, upstream_factory: MakeUpstream,
        client_ctx: ssl.SSLContext) -> None:
    proxy = TLSServiceProxy(make_server_context(cert_pair.cert, cert_pair.key))
    _, port = await proxied_echo(proxy, upstream_factory)
    conns = [await tls_connect(port, client_ctx) for _ in range(5)]
    for reader, _ in conns:
        assert await reader.readexactly(5) == b"ECHO "
    assert proxy.connection_count == 5
    await proxy.close()
    assert proxy.connection_count == 0 and not proxy.routes
    assert not [t for t in asyncio.all_tasks() if "TLSServiceProxy" in repr(t.get_coro())]
    with pytest.raises(OSError):
        await tls_connect(port, client_ctx)
    for reader, writer in conns:
        assert await _read_or_reset(reader) == b""
        await hang_up(writer)


async def test_a_service_that_stops_reading_stops_the_client_too(
        proxy: TLSServiceProxy, upstream_factory: MakeUpstream,
        client_ctx: ssl.SSLContext) -> None:
    release = asyncio.Event()

    async def deaf(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await release.wait()
        writer.close()

    _, target = await upstream_factory(deaf)
    port = await proxy.add("deaf", "127.0.0.1", 0, "127.0.0.1", target)
    _, writer = await tls_connect(port, client_ctx)
    pushed = 0
    chunk = b"\0" * (1 << 20)

    async def flood() -> None:
        nonlocal pushed
        while pushed < 256 * len(chunk):
            writer.write(chunk)
            await writer.drain()
            pushed += len(chunk)

    with pytest.raises(TimeoutError):
        await asyncio.wait_for(flood(), 3)
    # kernel socket buffers and the proxy's bounded buffers hold some megabytes, not all
    assert pushed < 64 * len(chunk)
    release.set()
    writer.transport.abort()
    await _until(lambda: proxy.connection_count == 0)


async def test_handshake_garbage_and_resets_are_survived(
        proxy: TLSServiceProxy, upstream_factory: MakeUpstream,
        client_ctx: ssl.SSLContext) -> None:
    _, port = await proxied_echo(proxy, upstream_factory)
    plain_r, plain_w = await asyncio.open_connection("127.0.0.1", port)
    plain_w.write(b"GET / HTTP/1.1\r\n\r\n")  # plain HTTP to the TLS port
    assert await _read_or_reset(plain_r) == b""
    plain_w.transport.abort()
    reader, writer = await tls_connect(port, client_ctx)
    assert await reader.readexactly(5) == b"ECHO "
    writer.transport.abort()  # a client that vanishes mid-connection
    await _until(lambda: proxy.connection_count == 0)
    reader, writer = await tls_connect(port, client_ctx)
    writer.write(b"still")
    assert await reader.readexactly(10) == b"ECHO still"
    await hang_up(writer)


async def test_a_tls_1_2_only_client_is_served(
        proxy: TLSServiceProxy, upstream_factory: MakeUpstream,
        client_ctx: ssl.SSLContext) -> None:
    _, port = await proxied_echo(proxy, upstream_factory)
    client_ctx.maximum_version = ssl.TLSVersion.TLSv1_2
    client_ctx.set_alpn_protocols(["h2", "http/1.1"])
    reader, writer = await tls_connect(port, client_ctx)
    assert await reader.readexactly(5) == b"ECHO "
    ssl_object = writer.get_extra_info("ssl_object")
    assert ssl_object.version() == "TLSv1.2"
    assert ssl_object.selected_alpn_protocol() == "http/1.1"  # never h2 to an HTTP/1 app
    await hang_up(writer)


async def test_duplicate_name_and_taken_port_are_refused_with_data(
        proxy: TLSServiceProxy, upstream_factory: MakeUpstream) -> None:
    _, port = await proxied_echo(proxy, upstream_factory)
    with pytest.raises(InvalidArgument) as dup:
        await proxy.add("svc", "127.0.0.1", 0, "127.0.0.1", 1)
    assert dup.value.data["name"] == "svc"
    with pytest.raises(ProxyListenFailed) as taken:
        await proxy.add("other", "127.0.0.1", port, "127.0.0.1", 1)
    assert taken.value.data["port"] == port and taken.value.data["name"] == "other"
    assert set(proxy.routes) == {"svc"}


def test_server_context_is_tls_1_2_plus(cert_pair: CertPair) -> None:
    ctx = make_server_context(cert_pair.cert, cert_pair.key)
    assert ctx.minimum_version == ssl.TLSVersion.TLSv1_2


def test_unloadable_files_are_a_config_error(cert_pair: CertPair, tmp_path: object) -> None:
    with pytest.raises(ConfigError) as missing:
        make_server_context(cert_pair.cert, cert_pair.cert.with_name("absent.pem"))
    assert missing.value.key_path == "service-tls"
    with pytest.raises(ConfigError):  # a certificate is not a key
        make_server_context(cert_pair.cert, cert_pair.cert)


async def _read_or_reset(reader: asyncio.StreamReader) -> bytes:
    """What is left to read until EOF; a reset or TLS error counts as the end too."""
    try:
        return await asyncio.wait_for(reader.read(), 10)
    except (ConnectionError, ssl.SSLError):
        return b""


async def _until(cond: Callable[[], bool], timeout: float = 10.0) -> None:
    async with asyncio.timeout(timeout):
        while not cond():
            await asyncio.sleep(0.01)
