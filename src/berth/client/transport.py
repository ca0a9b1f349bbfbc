"""The ZeroMQ edge of the client: a DEALER socket, optionally with CurveZMQ.

The only client-side module that imports zmq.
"""

from __future__ import annotations

from dataclasses import dataclass

import zmq
import zmq.asyncio

from berth.errors import RPCError
from berth.rpc import codec


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
    def __init__(self, addr: str, security: CurveClientSecurity | None) -> None:
        self.endpoint = to_endpoint(addr)
        self._security = security
        self._ctx: zmq.asyncio.Context | None = None
        self._sock: zmq.asyncio.Socket | None = None

    def connect(self) -> None:
        self._ctx = zmq.asyncio.Context()
        sock = self._ctx.socket(zmq.DEALER)
        sock.setsockopt(zmq.LINGER, 100)
        if self._security is not None:
            sock.zap_domain = b"local"
            sock.setsockopt(zmq.CURVE_SERVERKEY, self._security.server_public_key)
            sock.setsockopt(zmq.CURVE_PUBLICKEY, self._security.public_key)
            sock.setsockopt(zmq.CURVE_SECRETKEY, self._security.secret_key)
        try:
            sock.connect(self.endpoint)
        except zmq.ZMQError as exc:
            sock.close(0)
            raise RPCError(f"cannot connect to {self.endpoint}: {exc}",
                           endpoint=self.endpoint) from exc
        self._sock = sock

    async def ping(self, timeout: float) -> bool:
        """callosum's handshake: PING, then a PONG within ``timeout`` seconds."""
        assert self._sock is not None
        await self._sock.send_multipart([codec.PING, b"", b""])
        if not await self._sock.poll(int(timeout * 1000)):
            return False
        frames = await self._sock.recv_multipart()
        return bool(frames) and frames[0] == codec.PONG

    async def send(self, frames: list[bytes]) -> None:
        assert self._sock is not None
        await self._sock.send_multipart(frames)

    async def recv(self) -> list[bytes]:
        assert self._sock is not None
        frames: list[bytes] = await self._sock.recv_multipart()
        return frames

    def close(self) -> None:
        if self._sock is not None:
            self._sock.close(linger=0)
            self._sock = None
        if self._ctx is not None:
            self._ctx.term()
            self._ctx = None
