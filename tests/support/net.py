"""Plain HTTP to a loopback port, for checks that must not depend on the product's clients."""

from __future__ import annotations

import socket


def http_get(port: int, path: str = "/") -> bytes:
    """The raw HTTP/1.0 response (status line, headers, body) of ``GET path``."""
    with socket.create_connection(("127.0.0.1", port), timeout=5) as s:
        s.sendall(f"GET {path} HTTP/1.0\r\nHost: x\r\n\r\n".encode())
        chunks = []
        while data := s.recv(65536):
            chunks.append(data)
    return b"".join(chunks)
