"""Plain HTTP to a loopback port, for checks that must not depend on the product's clients,
and small aiohttp stand-ins (Loki, a storage proxy) served on loopback."""

from __future__ import annotations

import socket
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from aiohttp import web

from support.procs import free_port


def http_get(port: int, path: str = "/") -> bytes:
    """The raw HTTP/1.0 response (status line, headers, body) of ``GET path``."""
    with socket.create_connection(("127.0.0.1", port), timeout=5) as s:
        s.sendall(f"GET {path} HTTP/1.0\r\nHost: x\r\n\r\n".encode())
        chunks = []
        while data := s.recv(65536):
            chunks.append(data)
    return b"".join(chunks)


@asynccontextmanager
async def serve_app(app: web.Application, port: int | None = None) -> AsyncIterator[str]:
    """Serve ``app`` on a loopback port (a free one unless given); yields its base URL."""
    runner = web.AppRunner(app)
    await runner.setup()
    port = port or free_port()
    try:
        await web.TCPSite(runner, "127.0.0.1", port).start()
        yield f"http://127.0.0.1:{port}"
    finally:
        await runner.cleanup()
