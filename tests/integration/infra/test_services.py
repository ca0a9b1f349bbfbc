"""The daemons scripts/setup.sh --test-services starts answer on their loopback ports."""

from __future__ import annotations

import json
import socket
import urllib.request

NO_PROXY = urllib.request.build_opener(urllib.request.ProxyHandler({}))


def test_redis_answers_ping_without_persistence() -> None:
    with socket.create_connection(("127.0.0.1", 6379), timeout=5) as sock:
        sock.sendall(b"PING\r\nCONFIG GET save\r\n")
        reply = b""
        while not reply.endswith(b"$0\r\n\r\n"):
            chunk = sock.recv(4096)
            assert chunk, f"redis closed the connection after {reply!r}"
            reply += chunk
    assert reply.startswith(b"+PONG\r\n")


def test_etcd_reports_health() -> None:
    with NO_PROXY.open("http://127.0.0.1:2379/health", timeout=5) as resp:
        assert json.loads(resp.read())["health"] == "true"


def test_registry_serves_v2_api_without_auth() -> None:
    with NO_PROXY.open("http://127.0.0.1:5000/v2/", timeout=5) as resp:
        assert resp.status == 200
