"""The ZeroMQ edge of the RPC server: the only server-side module that imports zmq.

A ROUTER socket bound on ``host:port``, optionally with CurveZMQ and a ZAP handler
(domain ``"local"``) that admits only allow-listed client public keys. Also the two
certificate-file helpers :mod:`berth.rpc.keys` builds on.

Messages are pushed to the server: the socket's descriptor is watched by the event loop and
each wake drains the messages waiting (at most :data:`DRAIN_BATCH`, then the loop's other
callbacks get their turn), handing each to the server in that callback; replies are
non-blocking writes. (ZeroMQ's descriptor is edge-triggered: ``EVENTS`` is read again after
every receive and after a send made outside a drain.)
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Collection
from dataclasses import dataclass
from pathlib import Path
from typing import cast

import zmq
import zmq.asyncio
import zmq.auth
from zmq.auth.asyncio import AsyncioAuthenticator

from berth.errors import ConfigError, RPCError

log = logging.getLogger(__name__)

ZAP_DOMAIN = "local"
HEARTBEAT_IVL_MS = 2000
"""ZMTP heartbeats to every peer (transparent to callosum): a dead client's pipe goes after
three missed ones; Berth's client runs its own, faster ones to notice a dead agent."""
DRAIN_BATCH = 64
"""Messages handled per wake of the socket's descriptor before other callbacks run."""


@dataclass(frozen=True, slots=True)
class CurveServerSecurity:
    """The agent's key pair (z85 bytes) and the allowed client public keys (z85 bytes)."""

    public_key: bytes
    secret_key: bytes
    allowed_client_keys: frozenset[bytes]


def to_endpoint(addr: str) -> str:
    """``host:port`` (or ``tcp://host:port``) → a ZeroMQ endpoint; port 0 means any free port."""
    bare = addr.removeprefix("tcp://")
    host, sep, port = bare.rpartition(":")
    if not sep or not host or not port.isdigit():
        raise ConfigError(f"RPC address {addr!r} is not host:port", key_path="rpc-listen-addr")
    host = "*" if host in ("0.0.0.0", "") else host
    return f"tcp://{host}:{'*' if port == '0' else port}"


def load_certificate(path: Path) -> tuple[bytes, bytes | None]:
    """Read a ZeroMQ certificate file → (public key, secret key or None)."""
    try:
        return zmq.auth.load_certificate(path)
    except (OSError, ValueError) as exc:
        raise ConfigError(f"cannot read key file {path}: {exc}", key_path=str(path)) from exc


def create_certificates(directory: Path, name: str) -> tuple[Path, Path]:
    public, secret = zmq.auth.create_certificates(str(directory), name)
    return Path(public), Path(secret)


class _AllowList:
    """ZAP credentials provider: a client key is allowed iff it is in the set."""

    def __init__(self, keys: Collection[bytes]) -> None:
        self._keys = frozenset(keys)

    def callback(self, domain: str, key: bytes) -> bool:
        allowed = domain == ZAP_DOMAIN and key in self._keys
        if not allowed:
            log.warning("RPC connection refused: unknown client key %s (domain %r)",
                        key.decode("ascii", "replace"), domain)
        return allowed


class RouterTransport:
    """Bound ROUTER socket; frames in, frames out."""

    def __init__(self, addr: str, *, security: CurveServerSecurity | None,
                 max_message_size: int) -> None:
        self._endpoint = to_endpoint(addr)
        self._security = security
        self._max_message_size = max_message_size
        self._ctx: zmq.asyncio.Context | None = None  # asyncio: the ZAP handler runs in it
        self._sock: zmq.Socket[bytes] | None = None
        self._auth: AsyncioAuthenticator | None = None
        self._on_frames: Callable[[list[bytes]], None] | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._draining = self._drain_scheduled = False
        self.bound_endpoint = ""

    async def bind(self) -> None:
        self._ctx = zmq.asyncio.Context()
        sock: zmq.Socket[bytes] = zmq.Socket(self._ctx, zmq.ROUTER)  # plain: read by _drain
        sock.setsockopt(zmq.LINGER, 100)
        sock.setsockopt(zmq.MAXMSGSIZE, self._max_message_size)  # larger: connection dropped
        sock.setsockopt(zmq.HEARTBEAT_IVL, HEARTBEAT_IVL_MS)
        sock.setsockopt(zmq.HEARTBEAT_TIMEOUT, 3 * HEARTBEAT_IVL_MS)
        sock.setsockopt(zmq.HEARTBEAT_TTL, 3 * HEARTBEAT_IVL_MS)
        if self._security is not None:
            self._start_curve(sock, self._security)
        try:
            sock.bind(self._endpoint)
        except zmq.ZMQError as exc:
            sock.close(0)
            await self.close()
            raise RPCError(f"cannot bind {self._endpoint}: {exc}", endpoint=self._endpoint) from exc
        self._sock = sock
        self.bound_endpoint = sock.getsockopt_string(zmq.LAST_ENDPOINT)

    def _start_curve(self, sock: zmq.Socket[bytes], sec: CurveServerSecurity) -> None:
        assert self._ctx is not None
        self._auth = AsyncioAuthenticator(self._ctx)
        self._auth.start()
        self._auth.configure_curve_callback(ZAP_DOMAIN, _AllowList(sec.allowed_client_keys))
        sock.zap_domain = ZAP_DOMAIN.encode()
        sock.setsockopt(zmq.CURVE_SERVER, 1)
        sock.setsockopt(zmq.CURVE_SECRETKEY, sec.secret_key)

    async def serve(self, on_frames: Callable[[list[bytes]], None]) -> None:
        """Hand every message to ``on_frames``, in the callback that read it, until cancelled."""
        assert self._sock is not None, "transport is not bound"
        loop = self._loop = asyncio.get_running_loop()
        self._on_frames = on_frames
        fd = cast(int, self._sock.getsockopt(zmq.FD))
        loop.add_reader(fd, self._drain)
        loop.call_soon(self._drain)  # messages that came before the watch
        try:
            await loop.create_future()  # until cancelled
        finally:
            loop.remove_reader(fd)
            self._on_frames = None

    def _drain(self) -> None:
        self._drain_scheduled = False
        sock, handle = self._sock, self._on_frames
        if sock is None or handle is None:
            return
        self._draining = True
        try:
            for _ in range(DRAIN_BATCH):
                if not cast(int, sock.getsockopt(zmq.EVENTS)) & zmq.POLLIN:
                    return
                frames = sock.recv_multipart(zmq.NOBLOCK)
                try:
                    handle(frames)
                except Exception:  # never let one message stop the messages after it
                    log.exception("RPC: unexpected error handling a message; continuing")
            self._schedule_drain()  # more waiting: after the loop's other callbacks
        finally:
            self._draining = False

    def _schedule_drain(self) -> None:
        if not self._drain_scheduled and self._loop is not None:
            self._drain_scheduled = True
            self._loop.call_soon(self._drain)

    def send(self, frames: list[bytes]) -> None:
        """Write ``frames`` without waiting: a ROUTER sends at once or drops (a gone peer, a
        full pipe)."""
        sock = self._sock
        assert sock is not None, "transport is not bound"
        try:
            sock.send_multipart(frames, zmq.NOBLOCK)
        except zmq.ZMQError as exc:
            log.debug("RPC reply not sent: %s", exc)
        # outside a drain, the descriptor may not signal input that is already there
        if not self._draining and cast(int, sock.getsockopt(zmq.EVENTS)) & zmq.POLLIN:
            self._schedule_drain()

    async def close(self) -> None:
        if self._sock is not None:
            self._sock.close(linger=100)
            self._sock = None
        if self._auth is not None:
            self._auth.stop()
            self._auth = None
        if self._ctx is not None:
            self._ctx.term()
            self._ctx = None
