"""The ZeroMQ edge of the RPC server: the only server-side module that imports zmq.

A ROUTER socket bound on ``host:port``, optionally with CurveZMQ and a ZAP handler
(domain ``"local"``) that admits only allow-listed client public keys. Also the two
certificate-file helpers :mod:`berth.rpc.keys` builds on.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Collection
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast

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


def _log_unsent(sent: asyncio.Future[Any]) -> None:
    if not sent.cancelled() and (exc := sent.exception()) is not None:
        log.debug("RPC reply not sent: %s", exc)


class RouterTransport:
    """Bound ROUTER socket; frames in, frames out."""

    def __init__(self, addr: str, *, security: CurveServerSecurity | None,
                 max_message_size: int) -> None:
        self._endpoint = to_endpoint(addr)
        self._security = security
        self._max_message_size = max_message_size
        self._ctx: zmq.asyncio.Context | None = None
        self._sock: zmq.asyncio.Socket | None = None
        self._auth: AsyncioAuthenticator | None = None
        self.bound_endpoint = ""

    async def bind(self) -> None:
        self._ctx = zmq.asyncio.Context()
        sock = self._ctx.socket(zmq.ROUTER)
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

    def _start_curve(self, sock: zmq.asyncio.Socket, sec: CurveServerSecurity) -> None:
        assert self._ctx is not None
        self._auth = AsyncioAuthenticator(self._ctx)
        self._auth.start()
        self._auth.configure_curve_callback(ZAP_DOMAIN, _AllowList(sec.allowed_client_keys))
        sock.zap_domain = ZAP_DOMAIN.encode()
        sock.setsockopt(zmq.CURVE_SERVER, 1)
        sock.setsockopt(zmq.CURVE_SECRETKEY, sec.secret_key)

    async def recv(self) -> list[bytes]:
        assert self._sock is not None, "transport is not bound"
        frames: list[bytes] = await self._sock.recv_multipart()
        return frames

    def send(self, frames: list[bytes]) -> None:
        """Queue ``frames`` without waiting: a ROUTER sends at once or drops (a gone peer, a
        full pipe); pyzmq keeps the order of any send it has to finish later."""
        assert self._sock is not None, "transport is not bound"
        sent = cast("asyncio.Future[Any]", self._sock.send_multipart(frames))
        if sent.done():
            if (exc := sent.exception()) is not None:
                log.debug("RPC reply not sent: %s", exc)
        else:
            sent.add_done_callback(_log_unsent)

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
