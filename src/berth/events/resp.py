"""A small asyncio Redis client: RESP2 over one connection, the commands the agent sends.

Why not redis-py: it costs ~15 MiB of the agent's RSS (its import graph with and without it:
78 vs 63 MiB) and ~0.6 s of start-up (`python -X importtime -c 'import redis.asyncio'`) for a
few commands (SET, HSET, EXPIRE, DEL, RPUSH, XADD, PUBLISH, XREAD, MULTI/EXEC).  This module
speaks the protocol itself (https://redis.io/docs/latest/develop/reference/protocol-spec/):

- one connection, opened on first use (``AUTH`` and ``SELECT`` from the URL), requests
  serialised by a lock, pipelines written in one go and their replies read in order;
- every request runs under ``timeout`` seconds; a timeout, a socket error, a protocol error
  or a cancellation in the middle of a request closes the connection (its stream is no longer
  in step) and the next request opens a new one;
- an error reply raises ``RedisReplyError``; a pipeline reads every reply first, so the
  connection stays in step, then raises the first error;
- bulk replies are ``bytes``, ``None`` stands for a nil reply.

URL: ``redis://[[user]:password@]host[:port][/db]``; ``rediss://`` adds TLS with the system's
trust store; user and password are percent-decoded.
"""

from __future__ import annotations

import asyncio
import contextlib
import ssl
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, TypeAlias
from urllib.parse import unquote, urlsplit

Arg: TypeAlias = str | bytes | int | float
Reply: TypeAlias = Any  # bytes | int | str (status) | list[Reply] | None | RedisReplyError

MAX_BULK = 512 * 1024 * 1024  # Redis' own proto-max-bulk-len default
MAX_ARRAY = 1 << 24
MAX_LINE = 64 * 1024
MAX_DEPTH = 16  # arrays in arrays: the deepest reply the agent reads (XREAD) is 4


class RedisError(Exception):
    """Any failure of a Redis request (the connection, the protocol or the server's reply)."""


class RedisConnectionError(RedisError):
    """The connection failed or broke; the request may or may not have been carried out."""


class RedisProtocolError(RedisError):
    """The server's bytes are not RESP2 as this client reads it."""


class RedisReplyError(RedisError):
    """The server answered with an error reply (``-ERR ...``)."""


@dataclass(frozen=True)
class RedisAddress:
    host: str
    port: int = 6379
    db: int = 0
    username: str | None = None
    password: str | None = None
    tls: bool = False

    @classmethod
    def from_url(cls, url: str) -> RedisAddress:
        parts = urlsplit(url)
        if parts.scheme not in ("redis", "rediss"):
            raise ValueError(f"not a redis:// or rediss:// URL: {url!r}")
        try:
            port = parts.port or 6379
        except ValueError as exc:
            raise ValueError(f"bad port in redis URL {url!r}") from exc
        path = parts.path.strip("/")
        if path and not path.isdigit():
            raise ValueError(f"bad database number {path!r} in redis URL")
        return cls(
            host=parts.hostname or "127.0.0.1", port=port, db=int(path or 0),
            username=unquote(parts.username) if parts.username else None,
            password=unquote(parts.password) if parts.password is not None else None,
            tls=parts.scheme == "rediss",
        )


def encode_command(args: Sequence[Arg]) -> bytes:
    """``args`` as a RESP array of bulk strings."""
    out = [b"*%d\r\n" % len(args)]
    for arg in args:
        if isinstance(arg, bytes):
            data = arg
        elif isinstance(arg, str):
            data = arg.encode()
        elif isinstance(arg, bool):
            raise TypeError("a bool is not a Redis argument; send 0/1 or a string")
        elif isinstance(arg, int | float):
            data = repr(arg).encode()
        else:
            raise TypeError(f"not a Redis argument: {type(arg).__name__}")
        out.append(b"$%d\r\n" % len(data))
        out.append(data)
        out.append(b"\r\n")
    return b"".join(out)


async def read_reply(reader: asyncio.StreamReader, depth: int = 0) -> Reply:
    """One RESP2 reply; an error reply is returned (not raised) as ``RedisReplyError``."""
    if depth > MAX_DEPTH:
        raise RedisProtocolError(f"reply nested deeper than {MAX_DEPTH} arrays")
    line = await _line(reader)
    kind, rest = line[:1], line[1:]
    if kind == b"+":
        return rest.decode("utf-8", "replace")
    if kind == b"-":
        return RedisReplyError(rest.decode("utf-8", "replace"))
    if kind == b":":
        return _int(rest)
    if kind == b"$":
        return await _bulk(reader, _int(rest))
    if kind == b"*":
        return await _array(reader, _int(rest), depth)
    raise RedisProtocolError(f"unknown reply type {kind!r}")


async def _bulk(reader: asyncio.StreamReader, size: int) -> bytes | None:
    if size == -1:
        return None
    if not 0 <= size <= MAX_BULK:
        raise RedisProtocolError(f"bulk length {size} out of range")
    data = await reader.readexactly(size + 2)
    if data[-2:] != b"\r\n":
        raise RedisProtocolError("bulk string not followed by CRLF")
    return data[:-2]


async def _array(reader: asyncio.StreamReader, count: int, depth: int) -> list[Reply] | None:
    if count == -1:
        return None
    if not 0 <= count <= MAX_ARRAY:
        raise RedisProtocolError(f"array length {count} out of range")
    return [await read_reply(reader, depth + 1) for _ in range(count)]


async def _line(reader: asyncio.StreamReader) -> bytes:
    try:
        line = await reader.readuntil(b"\r\n")
    except asyncio.LimitOverrunError as exc:
        raise RedisProtocolError("reply line too long") from exc
    return line[:-2]


def _int(raw: bytes) -> int:
    try:
        return int(raw)
    except ValueError as exc:
        raise RedisProtocolError(f"not an integer: {raw[:40]!r}") from exc


class RedisClient:
    """One lazily opened connection to the server at ``url`` (see the module docstring)."""

    def __init__(self, url: str, *, timeout: float = 5.0,
                 connect_timeout: float | None = None) -> None:
        self.address = RedisAddress.from_url(url)
        self._timeout = timeout
        self._connect_timeout = timeout if connect_timeout is None else connect_timeout
        self._lock = asyncio.Lock()
        self._reader: asyncio.StreamReader | None = None
        self._writer: asyncio.StreamWriter | None = None

    async def execute(self, *args: Arg, timeout: float | None = None) -> Reply:
        """Send one command and return its reply (raise ``RedisReplyError`` on an error)."""
        (reply,) = await self.pipeline([args], timeout=timeout)
        return reply

    async def pipeline(self, commands: Sequence[Sequence[Arg]], *, transaction: bool = False,
                       timeout: float | None = None) -> list[Reply]:
        """Send ``commands`` in one write and return their replies in order.

        ``transaction`` wraps them in MULTI/EXEC and returns EXEC's replies.
        """
        if not commands:
            return []
        body = list(commands)
        if transaction:
            body = [("MULTI",), *body, ("EXEC",)]
        payload = b"".join(encode_command(c) for c in body)
        async with self._lock:
            replies = await self._exchange(payload, len(body), timeout)
        if transaction:
            errors = [r for r in replies[:-1] if isinstance(r, RedisReplyError)]
            if errors:
                raise errors[0]
            if replies[-1] is None:
                raise RedisReplyError("EXECABORT transaction discarded")
            replies = replies[-1]
        for reply in replies:
            if isinstance(reply, RedisReplyError):
                raise reply
        return list(replies)

    async def _exchange(self, payload: bytes, count: int, timeout: float | None) -> list[Reply]:
        try:
            async with asyncio.timeout(self._timeout if timeout is None else timeout):
                reader, writer = await self._connection()
                writer.write(payload)
                await writer.drain()
                return [await read_reply(reader) for _ in range(count)]
        except asyncio.IncompleteReadError as exc:
            self._drop()
            raise RedisConnectionError("connection closed by the server") from exc
        except (OSError, TimeoutError) as exc:
            self._drop()
            raise RedisConnectionError(f"{type(exc).__name__}: {exc}") from exc
        except BaseException:
            self._drop()  # cancelled or a protocol error: the stream is out of step
            raise

    async def _connection(self) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        if self._reader is not None and self._writer is not None:
            return self._reader, self._writer
        a = self.address
        async with asyncio.timeout(self._connect_timeout):
            reader, writer = await asyncio.open_connection(
                a.host, a.port, limit=MAX_LINE,
                ssl=ssl.create_default_context() if a.tls else None)
        self._reader, self._writer = reader, writer
        hello: list[Sequence[Arg]] = []
        if a.password is not None:
            hello.append(("AUTH", a.username, a.password) if a.username else ("AUTH", a.password))
        if a.db:
            hello.append(("SELECT", a.db))
        if hello:
            writer.write(b"".join(encode_command(c) for c in hello))
            await writer.drain()
            for reply in [await read_reply(reader) for _ in hello]:
                if isinstance(reply, RedisReplyError):
                    self._drop()
                    raise reply
        return reader, writer

    def _drop(self) -> None:
        writer, self._reader, self._writer = self._writer, None, None
        if writer is not None:
            writer.close()

    async def aclose(self) -> None:
        async with self._lock:
            writer = self._writer
            self._drop()
            if writer is not None:
                with contextlib.suppress(OSError):
                    await writer.wait_closed()
