"""The ZeroMQ edge of the client: a DEALER socket, optionally with CurveZMQ.

The only client-side module that imports zmq.

Replies are pushed, not pulled: the socket's file descriptor is watched by the event loop
(``loop.add_reader``) and each wake drains every message waiting, handing each to the
client's ``on_message`` callback in that same callback, so a reply resolves its caller's
future with no task, poller or queue between them. Sends are non-blocking writes made in the
caller's own step. (ZeroMQ's descriptor is edge-triggered: after every send or receive the
socket's ``EVENTS`` is read again, and a drain is scheduled when input is left.)

Liveness: the socket runs ZMTP heartbeats (``ZMQ_HEARTBEAT_*``, transparent to callosum
peers) and is monitored, so a dropped connection (agent killed, restarted, frozen past the
heartbeat timeout, or refusing a frame over its transport cap) reaches ``on_lost`` within
seconds as :class:`~berth.errors.AgentUnreachable`, after every reply that arrived before it.

Sending is gated on the monitor's view of the connection: after a drop, :meth:`send` waits
(at most ``connect_timeout``) for the next completed handshake. ZeroMQ alone would let a
message written just after the drop fall into the dying pipe and vanish; ``ZMQ_IMMEDIATE``
keeps requests from queueing while there is no connection, so a request meant for a dead
agent is never delivered later to its successor.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import cast

import zmq
from zmq.utils.monitor import parse_monitor_message

from berth.errors import AgentUnreachable, RPCError
from berth.rpc import codec

log = logging.getLogger(__name__)

_MONITORED = zmq.EVENT_DISCONNECTED | zmq.EVENT_HANDSHAKE_SUCCEEDED
_RETRY_SEND = 0.01  # a send refused with the connection up (queue full) is retried this often

OnMessage = Callable[[list[bytes]], None]
OnLost = Callable[[AgentUnreachable], None]


@dataclass(frozen=True, slots=True)
class CurveClientSecurity:
    """z85 keys: the agent's public key and this client's key pair."""

    server_public_key: bytes
    public_key: bytes
    secret_key: bytes


def to_endpoint(addr: str) -> str:
    """``host:port`` or ``tcp://host:port`` → ``tcp://host:port``."""
    return addr if "://" in addr else f"tcp://{addr}"


class DealerTransport:
    def __init__(self, addr: str, security: CurveClientSecurity | None, *,
                 heartbeat: float = 1.0, connect_timeout: float = 5.0) -> None:
        self.endpoint = to_endpoint(addr)
        self._security = security
        self._heartbeat_ms = max(1, int(heartbeat * 1000))
        self._connect_timeout = connect_timeout
        self._loop: asyncio.AbstractEventLoop | None = None
        self._ctx: zmq.Context[zmq.Socket[bytes]] | None = None
        self._sock: zmq.Socket[bytes] | None = None
        self._monitor: zmq.Socket[bytes] | None = None
        self._fds: list[int] = []
        self._on_message: OnMessage = _unopened
        self._on_lost: OnLost = _unopened
        self._pong: asyncio.Future[None] | None = None
        self._drain_scheduled = False
        self._up = asyncio.Event()  # the monitor saw a handshake and no drop since

    def open(self, on_message: OnMessage, on_lost: OnLost) -> None:
        """Connect; from now on every message goes to ``on_message``, every drop to
        ``on_lost`` (both called from event-loop callbacks, never concurrently)."""
        self._loop = asyncio.get_running_loop()
        self._up = asyncio.Event()  # made here: an Event binds to the loop that first waits
        self._on_message, self._on_lost = on_message, on_lost
        self._ctx = zmq.Context()
        sock = self._ctx.socket(zmq.DEALER)
        self._configure(sock)
        monitor = sock.get_monitor_socket(_MONITORED)
        try:
            sock.connect(self.endpoint)
        except zmq.ZMQError as exc:
            sock.disable_monitor()
            monitor.close(0)
            sock.close(0)
            self._ctx.term()
            self._ctx = None
            raise RPCError(f"cannot connect to {self.endpoint}: {exc}",
                           endpoint=self.endpoint) from exc
        self._sock, self._monitor = sock, monitor
        self._fds = [_int_option(sock, zmq.FD), _int_option(monitor, zmq.FD)]
        self._loop.add_reader(self._fds[0], self._drain)
        self._loop.add_reader(self._fds[1], self._drain_monitor)
        self._loop.call_soon(self._drain_monitor)  # events raised before the watch began

    def _configure(self, sock: zmq.Socket[bytes]) -> None:
        sock.setsockopt(zmq.LINGER, 100)
        sock.setsockopt(zmq.IMMEDIATE, 1)
        # A silent peer is dropped after 3 missed heartbeats; the agent drops us likewise.
        sock.setsockopt(zmq.HEARTBEAT_IVL, self._heartbeat_ms)
        sock.setsockopt(zmq.HEARTBEAT_TIMEOUT, 3 * self._heartbeat_ms)
        sock.setsockopt(zmq.HEARTBEAT_TTL, 3 * self._heartbeat_ms)
        if self._security is not None:
            sock.zap_domain = b"local"
            sock.setsockopt(zmq.CURVE_SERVERKEY, self._security.server_public_key)
            sock.setsockopt(zmq.CURVE_PUBLICKEY, self._security.public_key)
            sock.setsockopt(zmq.CURVE_SECRETKEY, self._security.secret_key)

    async def ping(self, timeout: float) -> bool:
        """callosum's handshake: a completed (Curve-accepted) ZMTP handshake, then PING and a
        PONG, all within ``timeout`` seconds."""
        assert self._loop is not None, "transport is not open"
        self._pong = self._loop.create_future()
        try:
            async with asyncio.timeout(timeout):
                await self._up.wait()
                await self.send([codec.PING, b"", b""])
                await self._pong
        except (TimeoutError, AgentUnreachable):
            return False
        finally:
            self._pong = None
        return True

    async def send(self, frames: list[bytes]) -> None:
        """Write ``frames`` now when connected (no wait, no loop turn); after a drop, wait at
        most ``connect_timeout`` for the next handshake, else :class:`AgentUnreachable`."""
        if self._up.is_set() and self._try_send(frames):
            return
        try:
            async with asyncio.timeout(self._connect_timeout):
                while True:
                    await self._up.wait()
                    if self._try_send(frames):
                        return
                    await asyncio.sleep(_RETRY_SEND)  # connected, but the queue is full
        except TimeoutError:
            raise AgentUnreachable(f"no connection to {self.endpoint} within "
                                   f"{self._connect_timeout}s", endpoint=self.endpoint) from None

    def _try_send(self, frames: list[bytes]) -> bool:
        sock = self._sock
        if sock is None:
            raise AgentUnreachable(f"connection to {self.endpoint} is closed",
                                   endpoint=self.endpoint)
        try:
            sock.send_multipart(frames, zmq.NOBLOCK)
        except zmq.Again:
            return False
        except zmq.ZMQError as exc:
            raise AgentUnreachable(f"cannot send to {self.endpoint}: {exc}",
                                   endpoint=self.endpoint) from exc
        self._recheck(sock)
        return True

    def _recheck(self, sock: zmq.Socket[bytes]) -> None:
        """After a send the descriptor may not signal input that is already there."""
        if not self._drain_scheduled and _int_option(sock, zmq.EVENTS) & zmq.POLLIN:
            assert self._loop is not None
            self._drain_scheduled = True
            self._loop.call_soon(self._drain)

    def _drain(self) -> None:
        """Every message waiting, in order, to ``on_message`` (PONGs to :meth:`ping`)."""
        self._drain_scheduled = False
        sock = self._sock
        while sock is not None and _int_option(sock, zmq.EVENTS) & zmq.POLLIN:
            frames = sock.recv_multipart(zmq.NOBLOCK)
            if frames and frames[0] == codec.PONG:
                if self._pong is not None and not self._pong.done():
                    self._pong.set_result(None)
                continue
            try:
                self._on_message(frames)
            except Exception:  # one bad reply must not stop the replies after it
                log.exception("RPC client: a reply could not be delivered")
            sock = self._sock  # the callback may have closed the transport

    def _drain_monitor(self) -> None:
        monitor = self._monitor
        while monitor is not None and _int_option(monitor, zmq.EVENTS) & zmq.POLLIN:
            event = parse_monitor_message(monitor.recv_multipart(zmq.NOBLOCK))["event"]
            if event == zmq.EVENT_HANDSHAKE_SUCCEEDED:
                self._up.set()
            elif event == zmq.EVENT_DISCONNECTED:
                self._up.clear()
                self._drain()  # replies that arrived before the drop come first
                self._on_lost(AgentUnreachable(f"connection to {self.endpoint} lost",
                                               endpoint=self.endpoint))
            monitor = self._monitor

    def close(self) -> None:
        if self._loop is not None:
            for fd in self._fds:
                with contextlib.suppress(Exception):  # the loop may be closed already
                    self._loop.remove_reader(fd)
        self._fds = []
        if self._sock is not None:
            self._sock.disable_monitor()
            self._sock.close(linger=0)
            self._sock = None
        if self._monitor is not None:
            self._monitor.close(linger=0)
            self._monitor = None
        self._up.clear()
        if self._ctx is not None:
            self._ctx.term()
            self._ctx = None


def _int_option(sock: zmq.Socket[bytes], option: int) -> int:
    return cast(int, sock.getsockopt(option))


def _unopened(_: object) -> None:
    raise AssertionError("transport is not open")
