"""Host-side TLS for a kernel's HTTP service ports: an asyncio proxy that terminates TLS.

Each route listens with TLS on ``listen_host:listen_port`` and pipes the decrypted bytes to
``target_host:target_port`` over plain TCP (the container port published on loopback).
The proxy is byte-transparent; it knows HTTP only in two places: ALPN offers ``http/1.1``
alone (so no client negotiates h2 with a service that cannot speak it), and a client whose
service does not answer gets a short ``502 Bad Gateway`` instead of a bare reset.

Memory per connection is bounded: reads are at most ``chunk_size`` bytes, every
StreamReader pauses its transport past ``buffer_limit``, and each write waits on ``drain``,
so a slow side slows the other instead of filling the agent's memory.

Every connection runs in one task owned by its route; ``remove`` stops accepting and cancels
the route's connections, ``close`` does so for all routes. Connection failures are logged,
never raised. This is the only module that imports ``ssl``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import ssl
from collections.abc import Coroutine, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Any, Self

from berth.errors import ConfigError, InvalidArgument, ResourceError

__all__ = [
    "BAD_GATEWAY",
    "ProxyListenFailed",
    "ProxyRoute",
    "TLSServiceProxy",
    "make_server_context",
]

log = logging.getLogger(__name__)

BAD_GATEWAY = (b"HTTP/1.1 502 Bad Gateway\r\nContent-Type: text/plain\r\n"
               b"Content-Length: 28\r\nConnection: close\r\n\r\n"
               b"service is not answering yet")


class ProxyListenFailed(ResourceError):
    """The proxy could not listen on the requested address (port taken, bad host)."""

    def __init__(self, name: str, host: str, port: int, reason: str) -> None:
        super().__init__(f"service proxy {name!r} cannot listen on {host}:{port}: {reason}",
                         name=name, host=host, port=port, reason=reason)


def make_server_context(cert: Path, key: Path) -> ssl.SSLContext:
    """A server context from PEM files, TLS 1.2 or newer, offering ALPN ``http/1.1``."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    ctx.set_alpn_protocols(["http/1.1"])
    try:
        ctx.load_cert_chain(certfile=cert, keyfile=key)
    except (OSError, ssl.SSLError) as e:  # missing file, bad PEM, key not matching cert
        raise ConfigError(f"cannot load {cert} / {key}: {e}", key_path="service-tls") from e
    return ctx


@dataclass(frozen=True, slots=True)
class ProxyRoute:
    name: str
    listen_host: str
    listen_port: int  # the bound port (differs from the asked one when 0 was asked)
    target_host: str
    target_port: int


@dataclass(slots=True)
class _Listener:
    route: ProxyRoute
    server: asyncio.Server | None = None
    connections: set[asyncio.Task[None]] = field(default_factory=set)


class TLSServiceProxy:
    """TLS-terminating TCP proxy with named routes; see the module docstring."""

    def __init__(self, ssl_context: ssl.SSLContext, *, buffer_limit: int = 256 * 1024,
                 chunk_size: int = 64 * 1024, connect_timeout: float = 10.0,
                 handshake_timeout: float = 30.0, shutdown_timeout: float = 5.0,
                 bad_gateway: bytes | None = BAD_GATEWAY) -> None:
        self._ctx = ssl_context
        self._limit = buffer_limit
        self._chunk = chunk_size
        self._connect_timeout = connect_timeout
        self._handshake_timeout = handshake_timeout
        self._shutdown_timeout = shutdown_timeout
        self._bad_gateway = bad_gateway
        self._listeners: dict[str, _Listener] = {}

    @classmethod
    def from_files(cls, cert: Path, key: Path, **options: Any) -> TLSServiceProxy:
        return cls(make_server_context(cert, key), **options)

    @property
    def routes(self) -> Mapping[str, ProxyRoute]:
        return {name: lsn.route for name, lsn in self._listeners.items()}

    @property
    def connection_count(self) -> int:
        return sum(len(lsn.connections) for lsn in self._listeners.values())

    async def add(self, name: str, listen_host: str, listen_port: int,
                  target_host: str, target_port: int) -> int:
        """Start serving TLS on listen_host:listen_port; returns the bound port."""
        if name in self._listeners:
            raise InvalidArgument(f"service proxy {name!r} exists", field="name", name=name)
        lsn = _Listener(ProxyRoute(name, listen_host, listen_port, target_host, target_port))
        self._listeners[name] = lsn  # reserved before the await: a racing add() sees it
        try:
            lsn.server = await self._listen(lsn)
        except OSError as e:
            del self._listeners[name]
            raise ProxyListenFailed(name, listen_host, listen_port, str(e)) from e
        bound = lsn.server.sockets[0].getsockname()[1]
        lsn.route = ProxyRoute(name, listen_host, bound, target_host, target_port)
        log.info("service proxy %s: tls %s:%d -> %s:%d", name, listen_host, bound,
                 target_host, target_port)
        return int(bound)

    async def remove(self, name: str) -> bool:
        """Stop accepting and drop the route's connections; False when there was no route."""
        lsn = self._listeners.pop(name, None)
        if lsn is None:
            return False
        await _stop(lsn)
        log.info("service proxy %s: removed", name)
        return True

    async def close(self) -> None:
        listeners, self._listeners = list(self._listeners.values()), {}
        for lsn in listeners:
            await _stop(lsn)

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(self, et: type[BaseException] | None, e: BaseException | None,
                        tb: TracebackType | None) -> None:
        await self.close()

    async def _listen(self, lsn: _Listener) -> asyncio.Server:
        def accepted(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            _own(lsn.connections, self._serve(lsn.route, reader, writer))

        return await asyncio.start_server(
            accepted, lsn.route.listen_host, lsn.route.listen_port, ssl=self._ctx,
            limit=self._limit, ssl_handshake_timeout=self._handshake_timeout,
            ssl_shutdown_timeout=self._shutdown_timeout, reuse_address=True)

    async def _serve(self, route: ProxyRoute, c_reader: asyncio.StreamReader,
                     c_writer: asyncio.StreamWriter) -> None:
        peer = c_writer.get_extra_info("peername")
        writers = [c_writer]
        try:
            try:
                u_reader, u_writer = await self._connect(route)
            except OSError as e:  # refused, unreachable, or connect_timeout passed
                log.warning("service proxy %s: %s:%d unreachable for %s: %r", route.name,
                            route.target_host, route.target_port, peer, e)
                await self._refuse(c_writer)
                return
            writers.append(u_writer)
            await self._relay(route, peer, c_reader, c_writer, u_reader, u_writer)
        finally:
            await _close_all(writers, self._shutdown_timeout)

    async def _relay(self, route: ProxyRoute, peer: object, c_reader: asyncio.StreamReader,
                     c_writer: asyncio.StreamWriter, u_reader: asyncio.StreamReader,
                     u_writer: asyncio.StreamWriter) -> None:
        try:
            sent, received = await self._splice(c_reader, c_writer, u_reader, u_writer)
            log.debug("service proxy %s: %s done, %d bytes up, %d down", route.name, peer,
                      sent, received)
        except* OSError as eg:  # resets, TLS errors (ssl.SSLError is an OSError), timeouts
            log.info("service proxy %s: %s dropped: %r", route.name, peer, eg.exceptions[0])
        except* Exception:
            log.exception("service proxy %s: %s failed", route.name, peer)

    async def _connect(self, route: ProxyRoute
                       ) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        return await asyncio.wait_for(
            asyncio.open_connection(route.target_host, route.target_port, limit=self._limit),
            self._connect_timeout)

    async def _splice(self, c_reader: asyncio.StreamReader, c_writer: asyncio.StreamWriter,
                      u_reader: asyncio.StreamReader, u_writer: asyncio.StreamWriter
                      ) -> tuple[int, int]:
        """Both directions until the service side ends; the client's EOF half-closes it."""
        async with asyncio.TaskGroup() as tg:
            up = tg.create_task(_pump(c_reader, u_writer, self._chunk))
            down = await _pump(u_reader, c_writer, self._chunk)
            if not up.done():
                up.cancel()
        return (0 if up.cancelled() else up.result()), down

    async def _refuse(self, c_writer: asyncio.StreamWriter) -> None:
        if not self._bad_gateway:
            return
        with contextlib.suppress(OSError):
            c_writer.write(self._bad_gateway)
            await c_writer.drain()


def _own(tasks: set[asyncio.Task[None]], coro: Coroutine[Any, Any, None]) -> None:
    """Run coro as a task held in tasks until it ends (the route is its owner)."""
    task = asyncio.get_running_loop().create_task(coro)
    tasks.add(task)
    task.add_done_callback(tasks.discard)


async def _stop(lsn: _Listener) -> None:
    if lsn.server is not None:
        lsn.server.close()
        await lsn.server.wait_closed()
    tasks = list(lsn.connections)
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)


async def _pump(reader: asyncio.StreamReader, writer: asyncio.StreamWriter,
                chunk: int) -> int:
    total = 0
    while data := await reader.read(chunk):
        writer.write(data)
        await writer.drain()
        total += len(data)
    if writer.can_write_eof():  # plain TCP toward the service; TLS has no half-close
        writer.write_eof()
    return total


async def _close_all(writers: list[asyncio.StreamWriter], timeout: float) -> None:
    """Close politely (TLS close_notify) within timeout, else abort; raises nothing but a
    cancellation, and even then every transport is closed or aborted."""
    for writer in writers:
        writer.close()
    try:
        await asyncio.wait_for(
            asyncio.gather(*(w.wait_closed() for w in writers), return_exceptions=True),
            timeout)
    except TimeoutError:
        _abort(writers)
    except asyncio.CancelledError:
        _abort(writers)
        raise


def _abort(writers: list[asyncio.StreamWriter]) -> None:
    for writer in writers:
        writer.transport.abort()  # harmless on a transport already closed
