"""LokiHandler against a local aiohttp push endpoint (no Loki server is packaged here)."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator
from typing import Any

import pytest
from aiohttp import web

from berth.logshipping import JsonFormatter, LokiHandler

from .conftest import free_port


class FakeLoki:
    def __init__(self) -> None:
        self.bodies: list[dict[str, Any]] = []
        self.delay = 0.0

    async def push(self, request: web.Request) -> web.Response:
        await asyncio.sleep(self.delay)
        self.bodies.append(await request.json())
        return web.Response(status=204)

    def lines(self) -> list[tuple[dict[str, str], str]]:
        return [(s["stream"], v[1]) for b in self.bodies for s in b["streams"] for v in s["values"]]


@pytest.fixture
async def loki() -> AsyncIterator[tuple[FakeLoki, str]]:
    fake = FakeLoki()
    app = web.Application()
    app.router.add_post("/loki/api/v1/push", fake.push)
    runner = web.AppRunner(app)
    await runner.setup()
    port = free_port()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    try:
        yield fake, f"http://127.0.0.1:{port}"
    finally:
        await runner.cleanup()


def make_logger(handler: logging.Handler, name: str) -> logging.Logger:
    logger = logging.getLogger(name)
    logger.propagate = False
    logger.setLevel(logging.DEBUG)
    logger.addHandler(handler)
    return logger


async def test_records_arrive_batched_with_labels(loki: tuple[FakeLoki, str]) -> None:
    fake, url = loki
    h = LokiHandler(url, "agent-l", batch_size=50, flush_interval=0.2)
    h.setFormatter(JsonFormatter())
    logger = make_logger(h, "berth.test.loki1")
    for i in range(120):
        logger.info("line %d", i, extra={"kernel_id": "k1"})
    logger.error("agent-level problem")
    for _ in range(100):
        if len(fake.lines()) >= 121:
            break
        await asyncio.sleep(0.05)
    await asyncio.to_thread(h.close)
    logger.removeHandler(h)
    lines = fake.lines()
    assert len(lines) == 121 and len(fake.bodies) >= 3  # batches of at most 50
    assert lines[0][0] == {"agent_id": "agent-l", "kernel_id": "k1", "level": "info"}
    assert ({"agent_id": "agent-l", "kernel_id": "", "level": "error"}, ) == (lines[-1][0], )
    assert '"message": "line 0"' in lines[0][1]
    assert h.dropped == 0 and h.failed_batches == 0


async def test_slow_endpoint_never_blocks_the_caller(loki: tuple[FakeLoki, str]) -> None:
    fake, url = loki
    fake.delay = 1.0
    h = LokiHandler(url, "agent-s", batch_size=10, flush_interval=0.05, queue_size=100,
                    timeout=3)
    logger = make_logger(h, "berth.test.loki2")
    t0 = time.perf_counter()
    for i in range(5000):
        logger.warning("spam %d", i)
    elapsed = time.perf_counter() - t0
    assert elapsed < 0.5  # 5000 records while the endpoint takes 1 s per batch
    assert h.dropped >= 4800
    logger.removeHandler(h)
    await asyncio.to_thread(h.close)


async def test_unreachable_endpoint_counts_failures(loki: tuple[FakeLoki, str]) -> None:
    h = LokiHandler(f"http://127.0.0.1:{free_port()}", "a", flush_interval=0.05, timeout=1)
    logger = make_logger(h, "berth.test.loki3")
    logger.info("x")
    for _ in range(40):
        if h.failed_batches:
            break
        await asyncio.sleep(0.05)
    logger.removeHandler(h)
    await asyncio.to_thread(h.close)
    assert h.failed_batches == 1 and h.sent == 0
