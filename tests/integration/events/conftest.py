"""A real redis-server per test, on a free loopback port in a tmp dir, killed by PID after."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from support.procs import RedisServer, free_port

# What this tier's test modules import from here: ``url`` is database 4 of the server;
# ``stop()`` and ``start()`` again make an outage.
RedisProcess = RedisServer
__all__ = ["RedisProcess", "free_port"]


@pytest.fixture
def redis_server(tmp_path: Path) -> Iterator[RedisProcess]:
    with RedisProcess(tmp_path) as server:
        yield server
