"""etcd's v3 JSON gateway over HTTP (aiohttp); the one module that speaks etcd's wire.

etcd (3.4 and later) serves its gRPC API as JSON at ``/v3/...`` on the client port. Keys and
values are base64, int64 fields are strings, and absent fields are omitted (a range with no
match has no ``kvs``, a PUT event has no ``type``, an empty value no ``value``). The calls used:

  * ``POST /v3/kv/range``            ``{key, range_end?}`` → ``{kvs?: [{key, value?, ...}]}``
  * ``POST /v3/kv/put``              ``{key, value}``
  * ``POST /v3/kv/deleterange``      ``{key, range_end?}`` → ``{deleted?}``
  * ``POST /v3/watch``               ``{create_request: {key, range_end?}}`` → a stream of
    ``{"result": {created?, canceled?, cancel_reason?, events?}}``, one JSON object a line
  * ``POST /v3/auth/authenticate``   ``{name, password}`` → ``{token}``, sent afterwards as the
    ``Authorization`` header
  * ``POST /v3/maintenance/status``  ``{}`` (needs no token): does etcd answer?

A failed call answers a non-2xx status and ``{"error", "message", "code"}`` (a gRPC code). With
credentials, a token etcd calls invalid (it expires, ``--auth-token-ttl``) is refreshed once and
the call retried. Everything raised here is one of ``ERRORS``: ``GatewayError`` for etcd's
errors and replies that are not the expected JSON, aiohttp's and the socket's for the
transport; the caller translates them.
"""

from __future__ import annotations

import asyncio
import base64
import json
from collections.abc import AsyncGenerator, AsyncIterator, Awaitable, Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from enum import StrEnum
from types import TracebackType
from typing import Any, Self, TypeVar

import aiohttp

T = TypeVar("T")

UNAUTHENTICATED = 16  # the gRPC code of an invalid or expired token
_STREAMING = aiohttp.ClientTimeout()  # a watch stays open; opening it is bounded separately


class GatewayError(Exception):
    """etcd answered with an error, or with something that is not a gateway reply."""

    def __init__(self, message: str, *, status: int | None = None,
                 code: int | None = None) -> None:
        super().__init__(message)
        self.status, self.code = status, code

    @property
    def unauthenticated(self) -> bool:
        return (self.status == 401 or self.code == UNAUTHENTICATED
                or "invalid auth token" in str(self))


# What the calls of this module raise.
ERRORS: tuple[type[Exception], ...] = (GatewayError, aiohttp.ClientError, OSError, TimeoutError)


@dataclass(frozen=True)
class KeyValue:
    key: bytes
    value: bytes


class EventType(StrEnum):
    PUT = "PUT"
    DELETE = "DELETE"


@dataclass(frozen=True)
class Event:
    type: EventType
    key: bytes
    value: bytes  # empty for a DELETE


def prefix_end(prefix: bytes) -> bytes:
    """The ``range_end`` that makes a range from ``prefix`` cover every key starting with it."""
    stripped = prefix.rstrip(b"\xff")
    if not stripped:
        return b"\0"  # etcd: every key from ``prefix`` on
    return stripped[:-1] + bytes([stripped[-1] + 1])


# ── the JSON shapes (pure) ──────────────────────────────────────────────────────────────────

def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def _unb64(text: Any) -> bytes:
    if not isinstance(text, str):
        raise TypeError(f"expected a base64 string, got {text!r:.80}")
    return base64.b64decode(text, validate=True)


def _range(key: bytes, range_end: bytes | None) -> dict[str, str]:
    body = {"key": _b64(key)}
    if range_end is not None:
        body["range_end"] = _b64(range_end)
    return body


@contextmanager
def _reading(what: str) -> Iterator[None]:
    """A reply that is not of the expected shape becomes ``GatewayError``."""
    try:
        yield
    except (ValueError, KeyError, TypeError, AttributeError) as exc:  # incl. JSON and base64
        raise GatewayError(f"malformed etcd reply to {what}: {exc!r}") from exc


def parse_object(raw: bytes, what: str) -> dict[str, Any]:
    with _reading(what):
        reply = json.loads(raw)
    if not isinstance(reply, dict):
        raise GatewayError(f"malformed etcd reply to {what}: {raw[:80]!r}")
    return reply


def parse_kvs(reply: dict[str, Any]) -> list[KeyValue]:
    """``kvs`` of a range reply (none when absent)."""
    with _reading("range"):
        return [KeyValue(_unb64(kv["key"]), _unb64(kv.get("value", "")))
                for kv in reply.get("kvs", [])]


def parse_error(status: int, body: bytes) -> GatewayError:
    """A non-2xx answer: etcd's ``{"error", "message", "code"}``, or any other body."""
    try:
        data = json.loads(body)
        return GatewayError(str(data.get("message") or data["error"]), status=status,
                            code=int(data["code"]) if "code" in data else None)
    except (ValueError, KeyError, TypeError, AttributeError):
        text = body[:200].decode(errors="replace").strip()
        return GatewayError(f"HTTP {status}: {text}", status=status)


def parse_watch_line(line: bytes) -> dict[str, Any]:
    """One message of a watch stream → its ``result``; an error or a cancel raises."""
    message = parse_object(line, "watch")
    if "error" in message:  # a stream error: {"error": {"grpc_code", "message", ...}}
        error = message["error"]
        if not isinstance(error, dict):
            raise GatewayError(f"etcd watch failed: {error!r:.200}")
        code = error.get("grpc_code")
        raise GatewayError(f"etcd watch failed: {error.get('message', '')}",
                           code=code if isinstance(code, int) else None)
    result = message.get("result")
    if not isinstance(result, dict):
        raise GatewayError(f"malformed etcd reply to watch: {line[:80]!r}")
    if result.get("canceled"):
        raise GatewayError(f"etcd cancelled the watch: {result.get('cancel_reason', '')}")
    return result


def parse_events(result: dict[str, Any]) -> list[Event]:
    with _reading("watch"):
        return [Event(EventType(ev.get("type", "PUT")), _unb64(ev["kv"]["key"]),
                      _unb64(ev["kv"].get("value", "")))
                for ev in result.get("events", [])]


MAX_WATCH_MESSAGE = 16 * 1024 * 1024


async def _lines(stream: aiohttp.StreamReader) -> AsyncGenerator[bytes, None]:
    """The newline-separated messages of a streamed body, however it is chunked."""
    buffer = b""
    async for chunk in stream.iter_any():
        *lines, buffer = (buffer + chunk).split(b"\n")
        for line in lines:
            if line.strip():
                yield line
        if len(buffer) > MAX_WATCH_MESSAGE:
            raise GatewayError(f"an etcd watch message over {MAX_WATCH_MESSAGE} bytes")
    if buffer.strip():
        yield buffer


# ── the client ──────────────────────────────────────────────────────────────────────────────

class Watch:
    """An open ``/v3/watch`` stream: ``async for event in watch`` until ``close()``.

    A watch does not end by itself: the end of the stream, an error in it or a cancel from
    etcd (compaction, a revoked token) raise ``GatewayError``.
    """

    def __init__(self, response: aiohttp.ClientResponse) -> None:
        self._response = response
        self._lines = _lines(response.content)

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(self, et: type[BaseException] | None, e: BaseException | None,
                        tb: TracebackType | None) -> None:
        await self.close()

    async def close(self) -> None:
        self._response.close()
        await self._lines.aclose()

    async def created(self) -> None:
        """Wait for etcd's confirmation that the watch exists."""
        result = await self._next()
        if not result.get("created"):
            raise GatewayError(f"etcd watch: expected the created reply, got {result!r:.200}")

    async def __aiter__(self) -> AsyncIterator[Event]:
        while True:
            for event in parse_events(await self._next()):
                yield event

    async def _next(self) -> dict[str, Any]:
        line = await anext(self._lines, None)
        if line is None:
            raise GatewayError("etcd closed the watch stream")
        return parse_watch_line(line)


class EtcdGateway:
    """``async with EtcdGateway(host, port) as etcd: await etcd.put(b"k", b"v")``.

    One aiohttp session, opened on first use; each call is bounded by ``timeout`` (a watch:
    its opening). With ``user`` and ``password`` every call carries a token.
    """

    def __init__(self, host: str, port: int, *, user: str | None = None,
                 password: str | None = None, timeout: float = 5.0) -> None:
        self._base = f"http://{host}:{port}"
        self._credentials = (user, password) if user and password else None
        self._timeout = timeout
        self._token: str | None = None
        self._auth_lock = asyncio.Lock()
        self._session: aiohttp.ClientSession | None = None
        self._closed = False

    async def __aenter__(self) -> Self:
        try:
            await self.connect()
        except BaseException:
            await self.close()
            raise
        return self

    async def __aexit__(self, et: type[BaseException] | None, e: BaseException | None,
                        tb: TracebackType | None) -> None:
        await self.close()

    async def connect(self) -> None:
        """Check that etcd answers; with credentials, take a token; without, check that etcd
        does not ask for one (its status answers anyone, so the first read would fail later)."""
        await self._call("/v3/maintenance/status", {})
        if self._credentials is not None:
            return
        try:
            await self._post("/v3/kv/range", {"key": _b64(b"\0"), "count_only": True})
        except GatewayError as exc:
            if exc.unauthenticated or "user name is empty" in str(exc):
                raise GatewayError(f"etcd has authentication enabled and no user and password "
                                   f"were given ({exc})", status=exc.status,
                                   code=exc.code) from exc
            raise

    async def close(self) -> None:
        self._closed = True
        if self._session is not None:
            session, self._session = self._session, None
            await session.close()

    async def range(self, key: bytes, range_end: bytes | None = None) -> list[KeyValue]:
        return parse_kvs(await self._call("/v3/kv/range", _range(key, range_end)))

    async def put(self, key: bytes, value: bytes) -> None:
        await self._call("/v3/kv/put", {"key": _b64(key), "value": _b64(value)})

    async def delete_range(self, key: bytes, range_end: bytes | None = None) -> int:
        reply = await self._call("/v3/kv/deleterange", _range(key, range_end))
        with _reading("deleterange"):
            return int(reply.get("deleted", 0))

    async def watch(self, key: bytes, range_end: bytes | None = None) -> Watch:
        """Open a watch; returns once etcd confirmed it, so no later change is missed."""
        body = {"create_request": _range(key, range_end)}
        return await self._authorized(lambda: self._open_watch(body))

    # ── one request ─────────────────────────────────────────────────────────────────────

    def _http(self) -> aiohttp.ClientSession:
        if self._closed:
            raise GatewayError("the etcd client is closed")
        if self._session is None:
            self._session = aiohttp.ClientSession(
                timeout=aiohttp.ClientTimeout(total=self._timeout))
        return self._session

    def _headers(self) -> dict[str, str]:
        return {"Authorization": self._token} if self._token else {}

    async def _call(self, path: str, body: dict[str, Any]) -> dict[str, Any]:
        return await self._authorized(lambda: self._post(path, body))

    async def _post(self, path: str, body: dict[str, Any]) -> dict[str, Any]:
        async with self._http().post(self._base + path, json=body,
                                     headers=self._headers()) as resp:
            raw = await resp.read()
        if resp.status != 200:
            raise parse_error(resp.status, raw)
        return parse_object(raw, path)

    async def _open_watch(self, body: dict[str, Any]) -> Watch:
        async with asyncio.timeout(self._timeout):
            resp = await self._http().post(self._base + "/v3/watch", json=body,
                                           headers=self._headers(), timeout=_STREAMING)
            watch = Watch(resp)
            try:
                if resp.status != 200:
                    raise parse_error(resp.status, await resp.read())
                await watch.created()
            except BaseException:
                await watch.close()
                raise
        return watch

    # ── the token ───────────────────────────────────────────────────────────────────────

    async def _authorized(self, attempt: Callable[[], Awaitable[T]]) -> T:
        """``attempt()`` with a token (taken first if there is none, e.g. after a failed
        refresh), once more with a new one if etcd found the one it carried invalid."""
        if self._credentials is not None and self._token is None:
            await self._authenticate(stale=None)
        token = self._token
        try:
            return await attempt()
        except GatewayError as exc:
            if self._credentials is None or not exc.unauthenticated:
                raise
        await self._authenticate(stale=token)
        return await attempt()

    async def _authenticate(self, stale: str | None) -> None:
        """Take a new token, unless another call already replaced ``stale``."""
        assert self._credentials is not None
        async with self._auth_lock:
            if self._token is not None and self._token != stale:
                return
            name, password = self._credentials
            self._token = None
            reply = await self._post("/v3/auth/authenticate",
                                     {"name": name, "password": password})
            token = reply.get("token")
            if not isinstance(token, str) or not token:
                raise GatewayError("etcd's authenticate reply carries no token")
            self._token = token
