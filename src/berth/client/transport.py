"""The ZeroMQ edge of the client: a DEALER socket, optionally with CurveZMQ.

The only client-side module that imports zmq.

Liveness: the socket runs ZMTP heartbeats (``ZMQ_HEARTBEAT_*``, transparent to callosum
peers) and is monitored, so a dropped connection (agent killed, restarted, frozen past the
heartbeat timeout, or refusing a frame over its transport cap) surfaces within seconds as
:class:`~berth.errors.AgentUnreachable` from :meth:`DealerTransport.recv`.

Sending is gated on the monitor's view of the connection: after a drop, :meth:`send` waits
(at most ``connect_timeout``) for the next completed handshake. ZeroMQ alone would let a
message written just after the drop fall into the dying pipe and vanish; ``ZMQ_IMMEDIATE``
keeps requests from queueing while there is no connection, so a request meant for a dead
agent is never delivered later to its successor.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass

import zmq
import zmq.asyncio
from zmq.utils.monitor import parse_monitor_message

from berth.errors import AgentUnreachable, RPCError
from berth.rpc import codec

_MONITORED = zmq.EVENT_DISCONNECTED | zmq.EVENT_HANDSHAKE_SUCCEEDED


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
        self._ctx: zmq.asyncio.Context | None = None
        self._sock: zmq.asyncio.Socket | None = None
        self._monitor: zmq.asyncio.Socket | None = None
        self._poller: zmq.asyncio.Poller | None = None
        self._up = asyncio.Event()  # the monitor saw a handshake and no drop since

    def connect(self) -> None:
        self._up = asyncio.Event()  # made here: an Event binds to the loop that first waits
        self._ctx = zmq.asyncio.Context()
        sock = self._ctx.socket(zmq.DEALER)
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
        monitor = sock.get_monitor_socket(_MONITORED)
        try:
            sock.connect(self.endpoint)
        except zmq.ZMQError as exc:
            sock.disable_monitor()
            monitor.close(0)
            sock.close(0)
            raise RPCError(f"cannot connect to {self.endpoint}: {exc}",
                           endpoint=self.endpoint) from exc
        self._sock, self._monitor = sock, monitor
        self._poller = zmq.asyncio.Poller()
        self._poller.register(sock, zmq.POLLIN)
        self._poller.register(monitor, zmq.POLLIN)

    async def ping(self, timeout: float) -> bool:
        """callosum's handshake: PING, then a PONG within ``timeout`` seconds."""
        assert self._sock is not None and self._monitor is not None
        try:  # first a completed (Curve-accepted) ZMTP handshake
            async with asyncio.timeout(timeout):
                while not self._up.is_set():
                    self._on_event(await self._monitor.recv_multipart())
                await self._sock.send_multipart([codec.PING, b"", b""])
        except TimeoutError:
            return False
        if not await self._sock.poll(int(timeout * 1000)):
            return False
        frames = await self._sock.recv_multipart()
        return bool(frames) and frames[0] == codec.PONG

    async def send(self, frames: list[bytes]) -> None:
        assert self._sock is not None
        try:
            async with asyncio.timeout(self._connect_timeout):
                await self._up.wait()
                await self._sock.send_multipart(frames)
        except TimeoutError:
            raise AgentUnreachable(f"no connection to {self.endpoint} within "
                                   f"{self._connect_timeout}s", endpoint=self.endpoint) from None

    async def recv(self) -> list[bytes]:
        """The next message; raises :class:`AgentUnreachable` when the connection drops."""
        assert self._sock is not None and self._monitor is not None
        assert self._poller is not None
        while True:
            ready = dict(await self._poller.poll())
            if self._sock in ready:  # replies that arrived before a drop come first
                frames: list[bytes] = await self._sock.recv_multipart()
                return frames
            if self._monitor in ready and self._on_event(await self._monitor.recv_multipart()):
                raise AgentUnreachable(f"connection to {self.endpoint} lost",
                                       endpoint=self.endpoint)

    def _on_event(self, frames: list[bytes]) -> bool:
        """Track the connection from one monitor event; True when it was a drop."""
        event = parse_monitor_message(frames)["event"]
        if event == zmq.EVENT_HANDSHAKE_SUCCEEDED:
            self._up.set()
        elif event == zmq.EVENT_DISCONNECTED:
            self._up.clear()
            return True
        return False

    def close(self) -> None:
        if self._sock is not None:
            self._sock.disable_monitor()
            self._sock.close(linger=0)
            self._sock = None
        if self._monitor is not None:
            self._monitor.close(linger=0)
            self._monitor = None
        self._poller = None
        self._up.clear()
        if self._ctx is not None:
            self._ctx.term()
            self._ctx = None

