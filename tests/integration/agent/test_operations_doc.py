"""Issue 12: docs/operations.md's reference tables against a live agent process.

One real agent with Redis, etcd, a Loki receiver and JSON logs runs a busybox kernel from
create to destroy and then stops; this test reads what it produced and compares it with the
doc's tables, both ways: every `/metrics` family (name, type, labels), every event on the
stream and on pub/sub (name, channel; the table against ``ALL_EVENTS`` too), every JSON log
field and Loki label, every etcd key it wrote under its namespace and every Redis key in each
DB. A metric, event, field or key added without a row here fails it, and so does a row naming
something the agent does not have.
"""

from __future__ import annotations

import asyncio
import json
import re
import subprocess
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import redis.asyncio as aioredis
from aiohttp import web
from support.net import serve_app

from berth import logctx
from berth.events.etcd_gateway import EtcdGateway, prefix_end
from berth.events.models import ALL_EVENTS

from .conftest import AgentFactory, AgentProcess, RedisServer, eventually, free_port, kernel_config

DOC = Path(__file__).resolve().parents[3] / "docs" / "operations.md"
# Collector families that are not the agent's own and need no row: the agent serves its own
# CollectorRegistry (no process/platform/gc collectors), so there are none.
GENERIC_FAMILIES: frozenset[str] = frozenset()
# Documented Redis keys this kernel's life does not produce (no commit, no background task).
CONDITIONAL_REDIS_KEYS = frozenset({"kernel.{kernel_id}.commit", "bgtask.{task_id}"})
# What one kernel's life on a node with Redis and etcd must show on the stream at least.
STREAM_EVENTS_SEEN = {"agent_started", "agent_heartbeat", "service_registered",
                      "kernel_preparing", "kernel_creating", "kernel_started",
                      "kernel_terminated", "do_sync_kernel_logs", "service_deregistered",
                      "agent_terminated"}
PUBSUB_EVENTS_SEEN = {"kernel_preparing", "kernel_creating", "kernel_started",
                      "kernel_terminated"}
MOCK = '[plugins.mock]\ncount = 1\nmetric-prefix = "cuda"\n'  # cuda_util: the GPU gauge too


# ───────────────────────────────────────────────────────────────── the doc's tables


@dataclass(frozen=True)
class Row:
    name: str
    cells: dict[str, str]


def reference_tables() -> dict[str, list[list[Row]]]:
    """``{### heading: [table, ...]}`` of the doc's reference section; a row's name is the
    backticked text of its first cell."""
    text = DOC.read_text()
    assert "## Reference" in text, "docs/operations.md lost its reference section"
    section = text.split("## Reference", 1)[1].split("\n## ", 1)[0]
    out: dict[str, list[list[Row]]] = {}
    for chunk in section.split("\n### ")[1:]:
        heading, body = chunk.split("\n", 1)
        tables: list[list[Row]] = []
        header: list[str] | None = None
        for line in body.splitlines() + [""]:
            if not line.startswith("|"):
                header = None
                continue
            cells = [c.strip() for c in line.strip().strip("|").split("|")]
            if header is None:
                header = cells
                tables.append([])
            elif not set(line) <= set("|-: "):
                name = re.fullmatch(r"`([^`]+)`", cells[0])
                assert name, f"{heading}: first cell is not one backticked name: {line}"
                tables[-1].append(Row(name.group(1), dict(zip(header, cells, strict=True))))
        out[heading.strip()] = tables
    return out


def backticked(cell: str) -> set[str]:
    return set(re.findall(r"`([^`]+)`", cell))


def pattern(key: str, known: dict[str, str], other: str) -> re.Pattern[str]:
    """A documented key with ``{placeholders}``: known ones → their value, others → ``other``."""
    parts = re.split(r"(\{[a-z_]+\})", key)
    return re.compile("".join(
        (re.escape(known[p[1:-1]]) if p[1:-1] in known else other)
        if p.startswith("{") and p.endswith("}") else re.escape(p) for p in parts))


# ───────────────────────────────────────────────────────────────── what the agent produced


def metric_families(text: str) -> dict[str, tuple[str, set[frozenset[str]]]]:
    """``{family: (type, {label-name sets of its samples})}`` from an exposition."""
    families: dict[str, tuple[str, set[frozenset[str]]]] = {}
    for line in text.splitlines():
        if line.startswith("# TYPE "):
            _, _, name, kind = line.split()
            families[name] = (kind, set())
    for line in text.splitlines():
        if not line or line.startswith("#"):
            continue
        sample = re.match(r"([a-zA-Z_:][a-zA-Z0-9_:]*)(\{(.*)\})?\s", line)
        assert sample, line
        name, labels = sample.group(1), sample.group(3) or ""
        names = frozenset(re.findall(r'([a-zA-Z_][a-zA-Z0-9_]*)="', labels)) - {"le"}
        family = next(f for f in (name, *(name.removesuffix(s) for s in
                                          ("_bucket", "_sum", "_count")))
                      if f in families)
        families[family][1].add(names)
    return families


@dataclass
class Loki:
    url: str
    streams: list[dict[str, Any]]


@pytest.fixture
async def loki() -> AsyncIterator[Loki]:
    """A Loki push endpoint that keeps what it is sent."""
    port = free_port()
    got = Loki(f"http://127.0.0.1:{port}", [])

    async def push(request: web.Request) -> web.Response:
        got.streams.extend((await request.json())["streams"])
        return web.Response(status=204)

    app = web.Application()
    app.router.add_post("/loki/api/v1/push", push)
    async with serve_app(app, port):
        yield got


async def redis_keys(server: RedisServer, db: int) -> set[str]:
    client = aioredis.Redis(host="127.0.0.1", port=server.port, db=db, decode_responses=True)
    try:
        return set(await client.keys("*"))
    finally:
        await client.aclose()


async def etcd_keys(addr: str, namespace: str) -> set[str]:
    host, port = addr.rsplit(":", 1)
    prefix = f"/sorna/{namespace}/".encode()
    async with EtcdGateway(host, int(port)) as client:
        return {kv.key[len(prefix):].decode()
                for kv in await client.range(prefix, prefix_end(prefix))}


async def stream_names(server: RedisServer) -> list[str]:
    client = aioredis.Redis(host="127.0.0.1", port=server.port, db=server.db,
                            decode_responses=True)
    try:
        return [fields["name"] for _, fields in await client.xrange("events")]
    finally:
        await client.aclose()


async def metrics_text(agent: AgentProcess) -> str:
    async with aiohttp.ClientSession() as http, http.get(
            f"http://127.0.0.1:{agent.internal_port}/metrics") as resp:
        assert resp.status == 200
        return await resp.text()


# ───────────────────────────────────────────────────────────────── the test


@pytest.mark.timeout(120)
async def test_operations_doc_names_exactly_what_a_live_agent_produces(
        agent_factory: AgentFactory, redis_server: RedisServer, etcd_addr: str,
        loki: Loki) -> None:
    doc = reference_tables()
    namespace = f"opsdoc{uuid.uuid4().hex[:6]}"

    pubsub_client = aioredis.Redis(host="127.0.0.1", port=redis_server.port,
                                   db=redis_server.db, decode_responses=True)
    pubsub = pubsub_client.pubsub()
    await pubsub.subscribe("events_all")
    broadcast: list[str] = []

    async def listen() -> None:
        async for message in pubsub.listen():
            if message["type"] == "message":
                broadcast.append(json.loads(message["data"])["name"])
    listener = asyncio.create_task(listen())
    try:
        # The first lines of extra_toml continue AgentProcess's own [logging] table.
        agent = await agent_factory(
            f'format = "json"\nloki-endpoint = "{loki.url}"\n'
            f'{redis_server.toml}[etcd]\naddr = "{etcd_addr}"\nnamespace = "{namespace}"\n'
            # heartbeats every 5 s: the stream (MAXLEN ~128) keeps agent_started for minutes
            "[debug]\nheartbeat-interval = 5\nstats-interval = 0.5\n" + MOCK,
            agent_toml='skip-manager-detection = true\n'
                       'allow-compute-plugins = ["cpu", "mem", "mock"]')
        await run_and_check(doc, agent, redis_server, etcd_addr, namespace, loki, broadcast)
    finally:
        listener.cancel()
        await asyncio.gather(listener, return_exceptions=True)
        await pubsub.aclose()
        await pubsub_client.aclose()


async def run_and_check(doc: dict[str, list[list[Row]]], agent: AgentProcess,
                        redis_server: RedisServer, etcd_addr: str, namespace: str, loki: Loki,
                        broadcast: list[str]) -> None:
    kid = str(uuid.uuid4())
    async with agent.client() as c:
        created = await c.create_kernels(kid, [kid], [kernel_config()], {})
    container_id = str(created[0]["container_id"])
    # A line of the kernel's own output, so its containerlog key and Loki stream have content.
    wrote = await asyncio.to_thread(
        subprocess.run, ["docker", "exec", container_id, "busybox", "sh", "-c",
                         "echo operations-doc > /proc/1/fd/1"],
        check=False, capture_output=True, text=True, timeout=30)
    assert wrote.returncode == 0, wrote.stderr

    async def kernel_measured() -> bool:
        text = await metrics_text(agent)
        return (f'kernel_id="{kid}"' in text and "backendai_agent_gpu_usage{" in text
                and "berth_node_containers_owned{" in text
                and 'backendai_process_utilization{' in text)
    await eventually(kernel_measured, 30, "the kernel's container and process series")
    check_metrics(doc["Metrics"][0], await metrics_text(agent))

    service_id = str(uuid.uuid5(uuid.NAMESPACE_DNS, f"agent/127.0.0.1:{agent.internal_port}"))
    etcd_written = await etcd_keys(etcd_addr, namespace)
    check_etcd(doc["etcd keys"][0], etcd_written, agent.agent_id, service_id)

    async with agent.client() as c:
        await c.destroy_kernel(kid, kid)

    async def terminated() -> bool:
        return "kernel_terminated" in await stream_names(redis_server)
    await eventually(terminated, 30, "kernel_terminated on the stream")
    known = {"agent_id": agent.agent_id, "kernel_id": kid, "container_id": container_id,
             "service_id": service_id}
    await check_redis(doc["Redis keys"][0], redis_server, known)

    async def container_output_shipped() -> bool:
        return any(s["stream"].get("source") == "container" for s in loki.streams)
    await eventually(container_output_shipped, 15, "the kernel's output pushed to Loki")

    await asyncio.to_thread(agent.stop)  # a clean stop: the deregistering events and keys
    assert agent.proc is not None and agent.proc.returncode == 0, agent.log()
    left = await etcd_keys(etcd_addr, namespace)
    assert not left & etcd_written, f"etcd keys left after a clean stop: {left & etcd_written}"
    assert f"service_discovery.agent.{service_id}" not in await redis_keys(redis_server, 0)

    await eventually(lambda: _has(broadcast, PUBSUB_EVENTS_SEEN), 5, "pub/sub events")
    check_events(doc["Events"][0], await stream_names(redis_server), broadcast)
    check_logs(doc["Log record fields and Loki labels"], agent.log_path, loki.streams)


async def _has(seen: list[str], wanted: set[str]) -> bool:
    return wanted <= set(seen)


def check_metrics(rows: list[Row], exposition: str) -> None:
    exported = metric_families(exposition)
    documented = {row.name: row for row in rows}
    histograms = {n for n, r in documented.items() if r.cells["type"] == "histogram"}
    counters = {n for n, r in documented.items() if r.cells["type"] == "counter"}
    derived = {f"{n.removesuffix('_total')}_created" for n in counters} | {
        f"{n}_created" for n in histograms}
    own = {n: v for n, v in exported.items() if n not in GENERIC_FAMILIES}
    undocumented = set(own) - set(documented) - derived
    assert not undocumented, f"exported but not in docs/operations.md: {sorted(undocumented)}"
    missing = set(documented) - set(own)
    assert not missing, f"documented but not exported by a live agent: {sorted(missing)}"
    for name, row in documented.items():
        kind, label_sets = own[name]
        assert kind == row.cells["type"], f"{name}: exported as {kind}, documented {row}"
        labels = frozenset(backticked(row.cells["labels"]))
        for found in label_sets:
            assert found == labels, f"{name}: a series has labels {sorted(found)}, " \
                                    f"documented {sorted(labels)}"
    for name in derived & set(own):  # X_created carries X's labels
        base = name.removesuffix("_created")
        row = documented.get(base) or documented[f"{base}_total"]
        assert all(s == frozenset(backticked(row.cells["labels"])) for s in own[name][1])
    for name in ("backendai_container_utilization", "backendai_process_utilization",
                 "backendai_device_utilization", "backendai_agent_gpu_usage",
                 "backendai_kernel_count", "backendai_kernel_start_phase_duration_seconds"):
        assert own[name][1], f"{name} has no series with a kernel running"


def check_events(rows: list[Row], on_stream: list[str], on_pubsub: list[str]) -> None:
    documented = {row.name: row.cells["channel"] for row in rows}
    models = {cls.name: cls for cls in ALL_EVENTS}
    assert set(documented) == set(models), (
        f"not documented: {sorted(set(models) - set(documented))}; "
        f"documented but no such event: {sorted(set(documented) - set(models))}")
    for name, channel in documented.items():
        cls = models[name]
        want = " + ".join(c for c, on in (("stream", cls.anycast), ("pub/sub", cls.broadcast))
                          if on)
        assert channel == want, f"{name}: documented channel {channel!r}, sent on {want!r}"
    for name in set(on_stream):
        assert "stream" in documented.get(name, ""), f"{name} on the stream, not documented so"
    for name in set(on_pubsub):
        assert "pub/sub" in documented.get(name, ""), f"{name} on pub/sub, not documented so"
    assert STREAM_EVENTS_SEEN <= set(on_stream), set(on_stream)
    assert PUBSUB_EVENTS_SEEN <= set(on_pubsub), set(on_pubsub)


def check_logs(tables: list[list[Row]], log_path: Path, streams: list[dict[str, Any]]) -> None:
    fields_rows, label_rows = tables
    fields, labels = {r.name for r in fields_rows}, {r.name for r in label_rows}
    assert set(logctx.FIELDS) <= fields
    records = [json.loads(line) for line in log_path.read_text().splitlines() if line.strip()]
    assert records, "the agent logged nothing"
    for record in records:
        assert set(record) <= fields, f"undocumented log fields {set(record) - fields}: {record}"
        assert set(logctx.FIELDS) <= set(record), record
    assert fields - {"exception"} <= set().union(*map(set, records)), "a field never appears"
    assert any(r["kernel_id"] and r["rpc_method"] for r in records), "no record names a kernel"
    assert streams, "nothing was pushed to Loki"
    for stream in streams:
        assert set(stream["stream"]) == labels, stream["stream"]
    assert {s["stream"]["source"] for s in streams} == {"agent", "container"}
    assert any(s["stream"]["kernel_id"] for s in streams if s["stream"]["source"] == "agent")


def check_etcd(rows: list[Row], written: set[str], agent_id: str, service_id: str) -> None:
    patterns = {row.name: pattern(row.name, {"agent_id": agent_id, "service_id": service_id},
                                  "[^/]+") for row in rows}
    for key in written:
        assert any(p.fullmatch(key) for p in patterns.values()), \
            f"etcd key {key} written by the agent is not documented"
    for name, p in patterns.items():
        assert any(p.fullmatch(key) for key in written), \
            f"documented etcd key {name} was not written by the agent: {sorted(written)}"


async def check_redis(rows: list[Row], server: RedisServer, known: dict[str, str]) -> None:
    by_db: dict[int, dict[str, re.Pattern[str]]] = {}
    for row in rows:
        number = re.match(r"\d+", row.cells["DB"])
        assert number, row
        by_db.setdefault(int(number.group()), {})[row.name] = pattern(row.name, known, ".+")
    for db in sorted(set(by_db) | set(range(16))):
        keys = await redis_keys(server, db)
        patterns = by_db.get(db, {})
        for key in keys:
            assert any(p.fullmatch(key) for p in patterns.values()), \
                f"Redis key {key!r} in DB {db} is not documented there"
        for name, p in patterns.items():
            if name not in CONDITIONAL_REDIS_KEYS:
                assert any(p.fullmatch(key) for key in keys), \
                    f"documented Redis key {name} is not in DB {db}: {sorted(keys)}"
