"""The agent's RPC server: callosum-compatible ROUTER, one task per request.

Shape follows uvicorn: ``await server.start()`` returns once the socket is bound (and Curve
auth is running); ``await server.close()`` stops it. Nothing a client sends stops the
server: every bad request gets a typed reply or, when it cannot be addressed, is dropped.

Body size: a FUNCTION body over ``max_body_size`` gets a ``RequestTooLarge`` FAILURE reply
(callosum peers see ``RPCUserError("RequestTooLarge", ...)``). The socket itself accepts
frames up to :func:`transport_cap` (a few times the limit) so that the server can read the
header and answer; a frame beyond that cap makes ZeroMQ drop the connection before the bytes
are buffered, so a hostile 2 GB frame costs no memory — Berth's client notices the drop at
once and fails its calls in flight with ``AgentUnreachable``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable
from typing import Protocol, Self

from berth import logctx
from berth.errors import BerthError, ConfigError, ProtocolError, RequestTooLarge, RPCTimeout
from berth.rpc import codec, failure
from berth.rpc.codec import Header, MsgType
from berth.rpc.handlers import HandlerRegistry, PreparedCall
from berth.rpc.transport import CurveServerSecurity, RouterTransport

log = logging.getLogger(__name__)

OnRequest = Callable[[str, float, BaseException | None], None]
"""Called after every addressed request: (method, duration in seconds, error or None);
a method the server does not serve is reported as :data:`UNKNOWN_METHOD`."""
UNKNOWN_METHOD = "<unknown>"

DEFAULT_MAX_BODY_SIZE = 10 * 2**20


def transport_cap(max_body_size: int) -> int:
    """The largest frame the socket accepts: room to read and refuse an oversized body."""
    return max_body_size * 4 + 65536


class ServerTransport(Protocol):
    """What the server needs from its socket (RouterTransport; fake.Loopback in tests)."""

    bound_endpoint: str

    async def bind(self) -> None: ...
    async def recv(self) -> list[bytes]: ...
    async def send(self, frames: list[bytes]) -> None: ...
    async def close(self) -> None: ...
_CallKey = tuple[bytes, str, str | bytes, int]


class RPCServer:
    def __init__(
        self,
        registry: HandlerRegistry,
        listen_addr: str,
        *,
        security: CurveServerSecurity | None = None,
        plain: bool = False,
        max_body_size: int = DEFAULT_MAX_BODY_SIZE,
        request_timeout: float = 600.0,
        on_request: OnRequest | None = None,
        transport: ServerTransport | None = None,
    ) -> None:
        if security is None and not plain:
            raise ConfigError("CurveZMQ keys are required unless plain mode is enabled",
                              key_path="rpc-auth-agent-keypair")
        self._registry = registry
        self._served = registry.names
        self._security = security
        self._max_body_size = max_body_size
        self._timeout = request_timeout
        self._on_request = on_request
        self._transport: ServerTransport = transport or RouterTransport(
            listen_addr, security=security, max_message_size=transport_cap(max_body_size))
        self._loop_task: asyncio.Task[None] | None = None
        self._inflight: dict[_CallKey, asyncio.Task[None]] = {}
        self._send_lock = asyncio.Lock()

    @property
    def endpoint(self) -> str:
        """The bound endpoint, e.g. ``tcp://127.0.0.1:6011`` (real port when 0 was asked)."""
        return self._transport.bound_endpoint

    async def start(self) -> None:
        await self._transport.bind()
        if self._security is None:
            log.warning("RPC server on %s runs in PLAIN mode: no encryption, no client "
                        "authentication", self.endpoint)
        else:
            log.info("RPC server on %s (CurveZMQ, %d allowed client keys)", self.endpoint,
                     len(self._security.allowed_client_keys))
        self._loop_task = asyncio.create_task(self._serve(), name="rpc-serve")

    async def close(self) -> None:
        if self._loop_task is not None:
            self._loop_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._loop_task
            self._loop_task = None
        await self._transport.close()

    async def __aenter__(self) -> Self:
        await self.start()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()

    async def _serve(self) -> None:
        async with asyncio.TaskGroup() as tg:
            while True:
                frames = await self._transport.recv()
                try:
                    await self._on_frames(frames, tg)
                except Exception:  # never let one message stop the loop
                    log.exception("RPC: unexpected error handling a message; continuing")

    async def _on_frames(self, frames: list[bytes], tg: asyncio.TaskGroup) -> None:
        if len(frames) != 4:
            await self._reply_malformed(frames, f"expected 4 frames, got {len(frames)}")
            return
        peer, kind, raw_header, raw_body = frames
        if kind == codec.PING:
            await self._send([peer, codec.PONG, raw_header, raw_body])
        elif kind == codec.UPPER:
            await self._on_upper(peer, raw_header, raw_body, tg)
        else:
            log.debug("RPC: dropped a message of unknown kind %r", kind[:16])

    async def _reply_malformed(self, frames: list[bytes], why: str) -> None:
        header = codec.header_or_none(frames[-2]) if len(frames) >= 3 else None
        if header is None or len(frames) < 3:
            log.debug("RPC: dropped an unaddressable message: %s", why)
            return
        await self._send_error(frames[0], header, MsgType.ERROR, ProtocolError(why))

    async def _on_upper(self, peer: bytes, raw_header: bytes, raw_body: bytes,
                        tg: asyncio.TaskGroup) -> None:
        header = codec.header_or_none(raw_header)
        if header is None:
            log.debug("RPC: dropped a message with an undecodable header")
            return
        key = (peer, header.meth, header.okey, header.seq)
        if header.type is MsgType.CANCEL:
            self._cancel(key)
        elif header.type is not MsgType.FUNCTION:
            await self._send_error(peer, header, MsgType.ERROR,
                                   ProtocolError(f"unexpected message type {header.type.name}"))
        elif len(raw_body) > self._max_body_size:
            err = RequestTooLarge(f"request body of {len(raw_body)} bytes exceeds the limit "
                                  f"of {self._max_body_size}", size=len(raw_body),
                                  limit=self._max_body_size)
            self._finish(header.meth, None, 0.0, err)
            await self._send_error(peer, header, MsgType.FAILURE, err)
        else:
            task = tg.create_task(self._handle(peer, header, raw_body, key))
            self._inflight[key] = task

    def _cancel(self, key: _CallKey) -> None:
        task = self._inflight.get(key)
        if task is not None:
            task.cancel()

    async def _handle(self, peer: bytes, header: Header, raw_body: bytes, key: _CallKey) -> None:
        started = time.perf_counter()
        kernel_id: str | None = None
        try:
            call = self._decode(header, raw_body)
            kernel_id = call.kernel_id
            # this request's task: its records name the kernel, session and method
            logctx.bind(kernel_id=kernel_id, session_id=call.session_id, rpc_method=call.method)
            reply = await self._run(call, header)
            self._finish(header.meth, kernel_id, time.perf_counter() - started, None)
            await self._send([peer, codec.UPPER, *reply])
        except asyncio.CancelledError:
            self._finish(header.meth, kernel_id, time.perf_counter() - started,
                         RPCTimeout("cancelled"))
            raise
        except _ReplyWithError as wrapped:
            self._finish(header.meth, kernel_id, time.perf_counter() - started, wrapped.exc)
            await self._send_error(peer, header, wrapped.msgtype, wrapped.exc)
        except Exception:  # a request task must never abort the task group
            log.exception("RPC: unexpected error serving %s", header.meth)
        finally:
            self._inflight.pop(key, None)

    def _decode(self, header: Header, raw_body: bytes) -> PreparedCall:
        try:
            request = codec.request_from_header(header, raw_body)
        except ProtocolError as exc:
            raise _ReplyWithError(MsgType.ERROR, exc) from None
        try:
            return self._registry.prepare(header.meth, request.args, request.kwargs)
        except BerthError as exc:
            raise _ReplyWithError(MsgType.FAILURE, exc) from None

    async def _run(self, call: PreparedCall, header: Header) -> tuple[bytes, bytes]:
        try:
            result = await asyncio.wait_for(call.run(), self._timeout)
        except TimeoutError:
            raise _ReplyWithError(MsgType.FAILURE, RPCTimeout(
                f"{call.method} did not finish within {self._timeout}s",
                method=call.method, timeout=self._timeout)) from None
        except Exception as exc:  # noqa: BLE001 - any handler error becomes a FAILURE
            raise _ReplyWithError(MsgType.FAILURE, exc) from None
        try:
            return codec.encode_result(header, result)
        except (TypeError, ValueError, OverflowError) as exc:
            raise _ReplyWithError(MsgType.FAILURE, exc) from None

    def _finish(self, method: str, kernel_id: str | None, duration: float,
                exc: BaseException | None) -> None:
        outcome = "ok" if exc is None else type(exc).__name__
        # A client picks the name: metrics see only served ones (bounded label values).
        if method not in self._served:
            method = UNKNOWN_METHOD
        log.info("rpc %s kernel=%s %.1fms %s", method, kernel_id or "-", duration * 1000, outcome)
        if self._on_request is not None:
            try:
                self._on_request(method, duration, exc)
            except Exception:  # a metrics hook must not break serving
                log.exception("RPC on_request hook failed")

    async def _send_error(self, peer: bytes, header: Header, msgtype: MsgType,
                          exc: BaseException) -> None:
        name, representation, tb = failure.describe(exc)
        await self._send([peer, codec.UPPER,
                          *codec.encode_error(header, msgtype, name, representation, tb)])

    async def _send(self, frames: list[bytes]) -> None:
        async with self._send_lock:
            await self._transport.send(frames)


class _ReplyWithError(Exception):
    def __init__(self, msgtype: MsgType, exc: BaseException) -> None:
        super().__init__(str(exc))
        self.msgtype = msgtype
        self.exc = exc

