"""Log shipping to Loki's push API, received by a local aiohttp endpoint that records what
arrives (no Loki server is packaged here). The first test drives a REAL agent process over RPC
and checks that its lines about a kernel arrive labelled with that kernel's id (bound by the
agent itself, never passed by the test), and that a kernel's container output follows."""

from __future__ import annotations

import asyncio
import json
import logging
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from support.docker import docker, docker_session, remove_containers
from support.net import serve_app
from support.procs import AgentProcess, port_block

from berth.telemetry.logshipping import JsonFormatter, LokiHandler

from .conftest import free_port

RUN_LABEL = f"lktest-{uuid.uuid4().hex[:8]}"
BUSYBOX, PYTHON = "berth/busybox:latest", "berth/python:3.11"


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

    def agent_records(self) -> list[tuple[dict[str, str], dict[str, Any]]]:
        """The agent's own records: (stream labels, the JSON line)."""
        return [(labels, json.loads(line)) for labels, line in self.lines()
                if labels.get("source") == "agent"]


@pytest.fixture(scope="module", autouse=True)
def _sweep() -> Iterator[None]:
    yield from docker_session(RUN_LABEL, BUSYBOX, PYTHON)


def kernel_config(image: str) -> dict[str, Any]:
    return {"image": {"canonical": image, "is_local": True},
            "resource_slots": {"cpu": "0.25", "mem": "256m"}}


async def wait_for(check: Any, what: str, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"{what} not seen within {timeout}s")
        await asyncio.sleep(0.2)


async def test_real_agent_labels_lines_about_a_kernel_with_its_id(
        loki: tuple[FakeLoki, str], tmp_path: Path) -> None:
    fake, url = loki
    agent = AgentProcess(tmp_path, f"{RUN_LABEL}-{uuid.uuid4().hex[:6]}",
                         port_range=port_block(24000),
                         # appended to the [logging] table the agent.toml ends with
                         extra_toml=f'format = "json"\nloki-endpoint = "{url}"\n')
    by_rpc, by_itself = str(uuid.uuid4()), str(uuid.uuid4())
    try:
        await agent.start()
        async with agent.client() as c:
            created = await c.create_kernels(by_rpc, [by_rpc], [kernel_config(PYTHON)], {})
            await c.destroy_kernel(by_rpc, by_rpc)
            created = await c.create_kernels(by_itself, [by_itself], [kernel_config(BUSYBOX)],
                                             {})
            docker("kill", created[0]["container_id"])  # no RPC: the Docker die event
            deadline = time.monotonic() + 30
            while await c.check_running(by_itself):
                assert time.monotonic() < deadline, "the killed kernel was never noticed"
                await asyncio.sleep(0.2)
        await wait_for(lambda: any("TERMINATED" in r["message"] and by_itself in r["message"]
                                   for _, r in fake.agent_records()), "the killed kernel's end")
        # the destroyed kernel's output is shipped from its teardown, off the RPC's path
        await wait_for(lambda: any(labels.get("source") == "container"
                                   and labels["kernel_id"] == by_rpc
                                   for labels, _ in fake.lines()),
                       "the python kernel's container output")
    finally:
        await agent.shutdown()
        left = remove_containers(agent.agent_id)
    assert not left, f"kernel containers left behind: {left}"

    records = fake.agent_records()
    for kid in (by_rpc, by_itself):
        about = [(labels, r) for labels, r in records if kid in r["message"]]
        assert about, f"no line names {kid}"
        # every line that names the kernel is labelled with it; the lifecycle's lines also
        # name its session (a request like check_running(kernel_id) does not carry one)
        assert {labels["kernel_id"] for labels, _ in about} == {kid}, about
        lifecycle = [r for _, r in about if r["logger"].startswith("berth.kernel")]
        assert lifecycle and {r["session_id"] for r in lifecycle} == {kid}, lifecycle
        requests = [r for _, r in about if r["logger"] == "berth.rpc.server"]
        assert requests and all(r["message"].startswith(f"rpc {r['rpc_method']} ")
                                for r in requests), requests
    rpc_lines = [(labels, r) for labels, r in records if r.get("rpc_method") == "destroy_kernel"]
    assert rpc_lines and all(labels["kernel_id"] == by_rpc for labels, _ in rpc_lines)
    died = [(labels, r) for labels, r in records if "exited by itself" in r["message"]]
    assert [labels["kernel_id"] for labels, _ in died] == [by_itself]
    assert not died[0][1]["rpc_method"]  # bound by the lifecycle, not by a request
    # lines about no kernel are not given one
    ready = [labels for labels, r in records if "ready" in r["message"] and "agent" in r["message"]]
    assert ready and all(labels["kernel_id"] == "" for labels in ready)
    # the python kernel's container output (its runner's own log) arrived under its id
    output = [line for labels, line in fake.lines()
              if labels.get("source") == "container" and labels["kernel_id"] == by_rpc]
    assert any("runner ready" in line for line in output), output[:20]


@pytest.fixture
async def loki() -> AsyncIterator[tuple[FakeLoki, str]]:
    fake = FakeLoki()
    app = web.Application()
    app.router.add_post("/loki/api/v1/push", fake.push)
    async with serve_app(app) as url:
        yield fake, url


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
    assert lines[0][0] == {"agent_id": "agent-l", "kernel_id": "k1", "level": "info",
                           "source": "agent"}
    assert lines[-1][0] == {"agent_id": "agent-l", "kernel_id": "", "level": "error",
                            "source": "agent"}
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
