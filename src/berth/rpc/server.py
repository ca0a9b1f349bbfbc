"""The agent's RPC server: callosum-compatible ROUTER; a quick call is answered in the loop
turn that read it, a call that waits goes on in its own task (the one its first step ran as).

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
import contextvars
import functools
import inspect
import logging
import time
from collections.abc import Callable, Coroutine
from typing import Any, Protocol, Self

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
QUIET_METHODS = frozenset({"ping", "health", "health_v2", "ping_kernel"})
"""Liveness probes, logged at DEBUG: they change nothing and a Manager or a load balancer may
send them every few seconds; every other call gets its INFO line (after its reply)."""

DEFAULT_MAX_BODY_SIZE = 10 * 2**20


def transport_cap(max_body_size: int) -> int:
    """The largest frame the socket accepts: room to read and refuse an oversized body."""
    return max_body_size * 4 + 65536


class ServerTransport(Protocol):
    """What the server needs from its socket (RouterTransport; fake.Loopback in tests)."""

    bound_endpoint: str

    async def bind(self) -> None: ...
    async def serve(self, on_frames: Callable[[list[bytes]], None]) -> None:
        """Hand every message received to ``on_frames`` until cancelled."""
        ...
    def send(self, frames: list[bytes]) -> None:
        """Queue a message without waiting (a ROUTER never blocks: it drops for a gone peer)."""
        ...
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
        self._tasks: asyncio.TaskGroup | None = None

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
            self._tasks = tg
            await self._transport.serve(self._on_message)

    def _on_message(self, frames: list[bytes]) -> None:
        try:
            self._on_frames(frames)
        except Exception:  # never let one message stop the server
            log.exception("RPC: unexpected error handling a message; continuing")

    def _on_frames(self, frames: list[bytes]) -> None:
        if len(frames) != 4:
            self._reply_malformed(frames, f"expected 4 frames, got {len(frames)}")
            return
        peer, kind, raw_header, raw_body = frames
        if kind == codec.UPPER:
            self._on_upper(peer, raw_header, raw_body)
        elif kind == codec.PING:
            self._transport.send([peer, codec.PONG, raw_header, raw_body])
        else:
            log.debug("RPC: dropped a message of unknown kind %r", kind[:16])

    def _reply_malformed(self, frames: list[bytes], why: str) -> None:
        header = codec.header_or_none(frames[-2]) if len(frames) >= 3 else None
        if header is None or len(frames) < 3:
            log.debug("RPC: dropped an unaddressable message: %s", why)
            return
        self._send_error(frames[0], header, MsgType.ERROR, ProtocolError(why))

    def _on_upper(self, peer: bytes, raw_header: bytes, raw_body: bytes) -> None:
        header = codec.header_or_none(raw_header)
        if header is None:
            log.debug("RPC: dropped a message with an undecodable header")
            return
        if header.type is MsgType.FUNCTION and len(raw_body) <= self._max_body_size:
            # its own context, its first step's and its task's: what it binds (logctx) stays
            context = contextvars.copy_context()
            context.run(self._start, context, peer, header, raw_body)
        elif header.type is MsgType.CANCEL:
            self._cancel((peer, header.meth, header.okey, header.seq))
        elif header.type is not MsgType.FUNCTION:
            self._send_error(peer, header, MsgType.ERROR,
                             ProtocolError(f"unexpected message type {header.type.name}"))
        else:
            err = RequestTooLarge(f"request body of {len(raw_body)} bytes exceeds the limit "
                                  f"of {self._max_body_size}", size=len(raw_body),
                                  limit=self._max_body_size)
            self._send_error(peer, header, MsgType.FAILURE, err)
            self._finish(header.meth, None, time.perf_counter(), err)

    def _cancel(self, key: _CallKey) -> None:
        task = self._inflight.get(key)
        if task is not None:
            task.cancel()

    def _start(self, context: contextvars.Context, peer: bytes, header: Header,
               raw_body: bytes) -> None:
        """Decode, validate and run a call's first step in this loop turn. A handler that
        returns without waiting (``ping``, the checks) is answered right here, before any
        further loop turn. The first step runs as the call's own task (made for it, not yet
        started), so what a handler binds to its task there (``asyncio.timeout``, a
        TaskGroup) is bound to the task that goes on with it; a call that waits goes on in
        that task (cancellable, under the request timeout), a quick call's task just ends.
        The log line and the metrics follow the reply."""
        started = time.perf_counter()
        try:
            call = self._decode(header, raw_body)
        except _ReplyWithError as wrapped:
            self._send_error(peer, header, wrapped.msgtype, wrapped.exc)
            self._finish(header.meth, None, started, wrapped.exc)
            return
        logctx.bind(kernel_id=call.kernel_id, session_id=call.session_id, rpc_method=call.method)
        coro = call.run()
        first = _FirstStep()
        assert self._tasks is not None, "the server is not serving"
        task = self._tasks.create_task(
            self._finish_waiting(peer, header, call, coro, first, started),
            name=f"rpc-{header.meth}", context=context)
        try:
            waits_on = _step_as(task, coro)
        except StopIteration as done:
            self._reply(peer, header, call, done.value, started)
            return
        except Exception as exc:  # noqa: BLE001 - any handler error becomes a FAILURE
            self._send_error(peer, header, MsgType.FAILURE, exc)
            self._finish(header.meth, call.kernel_id, started, exc)
            return
        first.waits_on, first.waiting = waits_on, True
        key = (peer, header.meth, header.okey, header.seq)
        self._inflight[key] = task
        task.add_done_callback(functools.partial(self._waited, key, header.meth, call.kernel_id,
                                                 coro, waits_on, started))

    def _waited(self, key: _CallKey, method: str, kernel_id: str | None,
                coro: Coroutine[Any, Any, Any], waits_on: Any, started: float,
                task: asyncio.Task[None]) -> None:
        """A waiting call's task ended. Cancelled before its first step, it never resumed
        the handler: that one is ended here, as a Task would end it."""
        self._inflight.pop(key, None)
        if inspect.getcoroutinestate(coro) == inspect.CORO_SUSPENDED:
            if isinstance(waits_on, asyncio.Future):
                waits_on.cancel()
            coro.close()
            self._finish(method, kernel_id, started, RPCTimeout("cancelled"))

    async def _finish_waiting(self, peer: bytes, header: Header, call: PreparedCall,
                              coro: Coroutine[Any, Any, Any], first: _FirstStep,
                              started: float) -> None:
        if not first.waiting:  # answered (or failed) in its first step
            return
        try:
            try:
                async with asyncio.timeout(self._timeout):
                    result = await _resume(coro, first.waits_on)
            except TimeoutError:
                exc: BaseException = RPCTimeout(
                    f"{call.method} did not finish within {self._timeout}s",
                    method=call.method, timeout=self._timeout)
            except asyncio.CancelledError:
                self._finish(header.meth, call.kernel_id, started, RPCTimeout("cancelled"))
                raise
            except Exception as exc_:  # noqa: BLE001 - any handler error becomes a FAILURE
                exc = exc_
            else:
                self._reply(peer, header, call, result, started)
                return
            self._send_error(peer, header, MsgType.FAILURE, exc)
            self._finish(header.meth, call.kernel_id, started, exc)
        except asyncio.CancelledError:
            raise
        except Exception:  # a request task must never abort the task group
            log.exception("RPC: unexpected error serving %s", header.meth)

    def _decode(self, header: Header, raw_body: bytes) -> PreparedCall:
        try:
            request = codec.request_from_header(header, raw_body)
        except ProtocolError as exc:
            raise _ReplyWithError(MsgType.ERROR, exc) from None
        try:
            return self._registry.prepare(header.meth, request.args, request.kwargs)
        except BerthError as exc:
            raise _ReplyWithError(MsgType.FAILURE, exc) from None

    def _reply(self, peer: bytes, header: Header, call: PreparedCall, result: Any,
               started: float) -> None:
        try:
            reply = codec.encode_result(header, result)
        except (TypeError, ValueError, OverflowError, BerthError) as exc:
            self._send_error(peer, header, MsgType.FAILURE, exc)
            self._finish(header.meth, call.kernel_id, started, exc)
            return
        self._transport.send([peer, codec.UPPER, *reply])
        self._finish(header.meth, call.kernel_id, started, None)

    def _finish(self, method: str, kernel_id: str | None, started: float,
                exc: BaseException | None) -> None:
        """After the reply went out: the call's log line and metrics (off its round trip)."""
        duration = time.perf_counter() - started
        outcome = "ok" if exc is None else type(exc).__name__
        # A client picks the name: metrics see only served ones (bounded label values).
        if method not in self._served:
            method = UNKNOWN_METHOD
        log.log(logging.DEBUG if method in QUIET_METHODS else logging.INFO,
                "rpc %s kernel=%s %.1fms %s", method, kernel_id or "-", duration * 1000, outcome)
        if self._on_request is not None:
            try:
                self._on_request(method, duration, exc)
            except Exception:  # a metrics hook must not break serving
                log.exception("RPC on_request hook failed")

    def _send_error(self, peer: bytes, header: Header, msgtype: MsgType,
                    exc: BaseException) -> None:
        name, representation, tb = failure.describe(exc)
        self._transport.send([peer, codec.UPPER,
                              *codec.encode_error(header, msgtype, name, representation, tb)])


class _FirstStep:
    """What a call's first step left for its task: whether it waits, and on what."""

    __slots__ = ("waiting", "waits_on")

    def __init__(self) -> None:
        self.waiting = False
        self.waits_on: Any = None


def _step_as(task: asyncio.Task[Any], coro: Coroutine[Any, Any, Any]) -> Any:
    """Take ``coro``'s first step with ``task`` as the loop's current task (as a task started
    eagerly would; the task that was current, if any, is current again afterwards)."""
    loop = task.get_loop()
    outer = asyncio.current_task(loop)
    if outer is not None:
        asyncio.tasks._leave_task(loop, outer)
    asyncio.tasks._enter_task(loop, task)
    try:
        return coro.send(None)
    finally:
        asyncio.tasks._leave_task(loop, task)
        if outer is not None:
            asyncio.tasks._enter_task(loop, outer)


async def _resume(coro: Coroutine[Any, Any, Any], waits_on: Any) -> Any:
    """Run to its end a coroutine that already took its first step, the way a Task would:
    wait for the future it yielded (a bare ``yield`` is one loop turn), then resume it; the
    future's outcome is the coroutine's to read. A cancellation of this task that did not
    reach that future (it was done already) is thrown into the coroutine."""
    try:
        while True:
            try:
                if waits_on is None:
                    await asyncio.sleep(0)
                else:
                    waits_on._asyncio_future_blocking = False  # taken, as a Task takes it
                    await waits_on
                thrown: BaseException | None = None
            except asyncio.CancelledError as exc:
                thrown = None if waits_on is not None and waits_on.cancelled() else exc
            except BaseException:  # noqa: BLE001 - the future's error: the coroutine reads it
                thrown = None
            try:
                waits_on = coro.send(None) if thrown is None else coro.throw(thrown)
            except StopIteration as done:
                return done.value
    finally:
        coro.close()


class _ReplyWithError(Exception):
    def __init__(self, msgtype: MsgType, exc: BaseException) -> None:
        super().__init__(str(exc))
        self.msgtype = msgtype
        self.exc = exc

