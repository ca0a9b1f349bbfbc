"""The Redis edge: events to the Manager (stream + pub/sub) and the keys the Manager reads.

The one user of ``berth.events.resp`` (the agent's own RESP client).  ``RedisError``/``OSError``
become ``EventBusError`` in one place (``_mapped``).

Delivery, as the Backend.AI 26.9 manager's message queue reads it: anycast = ``XADD events
MAXLEN ~ stream_maxlen * name source payload metadata``; broadcast = ``PUBLISH events_all``
with the JSON object ``{"name", "source", "payload", "metadata"}`` whose ``payload`` and
``metadata`` are JSON *strings* (the event body, and the message metadata with null fields);
bgtask events are also ``SET bgtask.{task_id}`` (same body, 300 s TTL).  The DB number
comes from the URL (the manager reads DB 4, the stream role).

Producers never wait for Redis: ``EventBus.emit`` appends to a bounded backlog and returns.
One owned sender task drains the backlog in order; when Redis is unreachable it keeps the
messages and retries with capped backoff, so a Redis outage loses nothing below the cap.
Delivery is at least once: a batch whose reply was lost (Redis slower than the 5 s socket
timeout) is sent again, so a consumer can see an event twice, never out of order.
"""

from __future__ import annotations

import asyncio
import base64
import json
import logging
import time
import zlib
from collections.abc import AsyncGenerator, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from types import TracebackType
from typing import Any, Protocol, Self
from urllib.parse import urlsplit, urlunsplit

import msgpack

from berth.errors import EventBusError
from berth.events.backlog import Backlog, Envelope
from berth.events.discovery import ServiceRecord
from berth.events.models import AgentEvent
from berth.events.resp import Arg, RedisClient, RedisError

log = logging.getLogger(__name__)

STREAM_KEY = "events"
BROADCAST_CHANNEL = "events_all"
BGTASK_CACHE_TTL = 300
# The message metadata the manager's producer attaches (request id, users, trace parent);
# the agent acts on nobody's request, so every field is null.
MESSAGE_METADATA = json.dumps(
    {"request_id": None, "user": None, "triggered_user": None, "traceparent": None},
    separators=(",", ":"))



@contextmanager
def _mapped(operation: str) -> Iterator[None]:
    """Translate Redis and socket failures into ``EventBusError`` (the one mapping point)."""
    try:
        yield
    except (TimeoutError, RedisError, OSError) as exc:
        raise EventBusError(f"redis {operation} failed: {exc!r}", operation=operation,
                            cause=type(exc).__name__) from exc


def redis_url_with_db(url: str, db: int) -> str:
    """Return ``url`` with its database number replaced by ``db``."""
    parts = urlsplit(url)
    return urlunsplit((parts.scheme, parts.netloc, f"/{db}", parts.query, parts.fragment))


def _client(url: str, timeout: float) -> RedisClient:
    return RedisClient(url, timeout=timeout)


class EventTransport(Protocol):
    """Sends a batch of envelopes in order or raises ``EventBusError`` (nothing half-sent)."""

    async def send(self, batch: Sequence[Envelope]) -> None: ...

    async def close(self) -> None: ...


class RedisEventTransport:
    def __init__(self, redis_url: str, *, stream_maxlen: int = 128, timeout: float = 5.0) -> None:
        self._redis = _client(redis_url, timeout)
        self._maxlen = stream_maxlen

    async def send(self, batch: Sequence[Envelope]) -> None:
        commands = [c for env in batch for c in self._commands(env)]
        with _mapped("send events"):
            await self._redis.pipeline(commands)

    def _commands(self, env: Envelope) -> Iterator[tuple[Arg, ...]]:
        if env.anycast:
            yield ("XADD", STREAM_KEY, "MAXLEN", "~", self._maxlen, "*", "name", env.name,
                   "source", env.source, "payload", env.payload, "metadata", MESSAGE_METADATA)
        if env.broadcast:
            body = broadcast_body(env)
            yield ("PUBLISH", BROADCAST_CHANNEL, body)
            if env.cache_key is not None:
                yield ("SET", env.cache_key, body, "EX", BGTASK_CACHE_TTL)

    async def close(self) -> None:
        with _mapped("close"):
            await self._redis.aclose()


def broadcast_body(env: Envelope) -> str:
    """The pub/sub message (and bgtask cache value) of ``env``: payload stays a JSON string."""
    return json.dumps({"name": env.name, "source": env.source, "payload": env.payload,
                       "metadata": MESSAGE_METADATA}, separators=(",", ":"))


class EventBus:
    """Non-blocking event producer with a bounded backlog and an owned sender task.

    Use as ``async with EventBus(url, agent_id, backlog_size) as bus: bus.emit(ev)``, or call
    ``start()`` / ``close()``.
    """

    def __init__(
        self, redis_url: str, agent_id: str, backlog_size: int = 4096, *,
        stream_maxlen: int = 128, batch_size: int = 64, retry_min: float = 0.2,
        retry_max: float = 5.0, transport: EventTransport | None = None,
    ) -> None:
        self.agent_id = agent_id
        self._transport = transport or RedisEventTransport(redis_url, stream_maxlen=stream_maxlen)
        self._backlog = Backlog(backlog_size)
        self._batch_size = batch_size
        self._retry = (retry_min, retry_max)
        self._delay = retry_min
        self._wakeup = asyncio.Event()
        self._drained = asyncio.Event()
        self._drained.set()
        self._task: asyncio.Task[None] | None = None
        self.connected = True
        self.sent = 0

    @property
    def dropped(self) -> int:
        return self._backlog.dropped

    @property
    def pending(self) -> int:
        return len(self._backlog)

    def emit(self, event: AgentEvent, *, coalesce: bool = False) -> None:
        """Queue ``event``; never blocks. ``coalesce`` replaces a waiting event of the same name."""
        env = Envelope(
            name=event.name, source=self.agent_id, payload=event.payload_json(),
            anycast=event.anycast, broadcast=event.broadcast, cache_key=event.cache_key(),
            coalesce_key=event.name if coalesce else None,
        )
        lost = self._backlog.push(env)
        if lost is not None:
            self._warn_dropped(lost)
        self._drained.clear()
        self._wakeup.set()

    def _warn_dropped(self, lost: Envelope) -> None:
        n = self._backlog.dropped
        if n == 1 or n % 100 == 0:
            log.warning("event backlog full (%d): dropped oldest event %s; %d dropped so far",
                        self._backlog.capacity, lost.name, n)

    async def start(self) -> None:
        if self._task is None:
            self._task = asyncio.create_task(self._run(), name="event-bus-sender")

    async def flush(self, timeout: float) -> bool:
        """Wait until the backlog is empty; False when ``timeout`` passed first."""
        try:
            await asyncio.wait_for(self._drained.wait(), timeout)
        except TimeoutError:
            return False
        return True

    async def close(self, flush_timeout: float = 2.0) -> None:
        if self._task is not None:
            if not await self.flush(flush_timeout):
                log.warning("event bus closing with %d unsent events", self.pending)
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
            self._task = None
        try:
            await self._transport.close()
        except EventBusError as exc:
            log.debug("closing event transport: %s", exc)

    async def __aenter__(self) -> Self:
        await self.start()
        return self

    async def __aexit__(self, et: type[BaseException] | None, e: BaseException | None,
                        tb: TracebackType | None) -> None:
        await self.close()

    async def _run(self) -> None:
        while True:
            await self._wakeup.wait()
            batch = self._backlog.head(self._batch_size)
            if not batch:
                self._wakeup.clear()
                self._drained.set()
                continue
            try:
                await self._transport.send(batch)
            except EventBusError as exc:
                await self._on_failure(exc)
                continue
            self._on_success(batch)

    def _on_success(self, batch: Sequence[Envelope]) -> None:
        self._backlog.discard_head(batch)
        self.sent += len(batch)
        self._delay = self._retry[0]
        if not self.connected:
            self.connected = True
            log.info("event bus reconnected; %d events still waiting", self.pending)

    async def _on_failure(self, exc: EventBusError) -> None:
        if self.connected:
            self.connected = False
            log.warning("event bus disconnected (%s); buffering up to %d events",
                        exc, self._backlog.capacity)
        await asyncio.sleep(self._delay)
        self._delay = min(self._delay * 2, self._retry[1])


@dataclass(frozen=True)
class StreamEntry:
    entry_id: str
    name: str
    source: str
    payload: str


async def tail_events(redis_url: str, *, from_start: bool = False,
                      block_ms: int = 1000) -> AsyncGenerator[StreamEntry, None]:
    """Yield entries of the ``events`` stream as they arrive (``from_start``: existing ones too)."""
    client = _client(redis_url, timeout=block_ms / 1000 + 5)
    last = "0-0" if from_start else "$"
    try:
        while True:
            with _mapped("xread"):
                reply: Any = await client.execute("XREAD", "BLOCK", block_ms, "STREAMS",
                                                  STREAM_KEY, last)
            for _stream, entries in reply or []:
                for entry_id, fields in entries:
                    last = entry_id.decode()
                    yield _stream_entry(last, dict(zip(fields[::2], fields[1::2], strict=True)))
    finally:
        await client.aclose()


def _stream_entry(entry_id: str, fields: Mapping[bytes, bytes]) -> StreamEntry:
    name, source, payload = (fields[k].decode() for k in (b"name", b"source", b"payload"))
    return StreamEntry(entry_id, name, source, payload)


# ── keys the Manager reads (reference §7.3) ──────────────────────────────────────────────

STAT_DB, LIVE_DB, IMAGE_DB, CONTAINER_LOG_DB = 0, 2, 3, 6
DAY = 86400


class ManagerStore:
    """Writes the Valkey/Redis keys the Manager reads; DB numbers follow Backend.AI's roles.

    ``redis_url``'s own DB number is ignored; ``db_overrides`` maps role → DB when a site
    differs (roles: stat, live, image, container_log).
    """

    def __init__(self, redis_url: str, agent_id: str, *, timeout: float = 2.0,
                 db_overrides: Mapping[str, int] | None = None) -> None:
        dbs = {"stat": STAT_DB, "live": LIVE_DB, "image": IMAGE_DB,
               "container_log": CONTAINER_LOG_DB, **(db_overrides or {})}
        self.agent_id = agent_id
        self._clients = {role: _client(redis_url_with_db(redis_url, db), timeout)
                         for role, db in dbs.items()}

    async def _call(self, what: str, role: str, commands: Sequence[Sequence[Arg]], *,
                    transaction: bool = False) -> None:
        if commands:
            with _mapped(what):
                await self._clients[role].pipeline(commands, transaction=transaction)

    async def write_node_stats(self, stats: Mapping[str, Any], ttl: float) -> None:
        """``{agent_id}`` ← msgpack ``{"node": {...}, "devices": {...}}``."""
        await self._call("node stats", "stat", [
            ("SET", self.agent_id, msgpack.packb(dict(stats)), "EX", max(1, int(ttl)))])

    async def write_kernel_stats(self, kernel_id: str, stats: Mapping[str, Any]) -> None:
        """``{kernel_id}`` ← msgpack ``{metric: MetricValue}``, TTL 24 h."""
        await self._call("kernel stats", "stat", [
            ("SET", kernel_id, msgpack.packb(dict(stats)), "EX", DAY)])

    async def write_container_count(self, count: int) -> None:
        await self._call("container count", "stat", [
            ("SET", f"container_count.{self.agent_id}", count, "EX", DAY)])

    async def write_installed_images(self, images: Sequence[Mapping[str, str]]) -> None:
        """``installed_image:{agent_id}`` ← JSON ``[{canonical, digest, architecture}]``."""
        body = json.dumps([dict(i) for i in images])
        await self._call("installed images", "image", [
            ("SET", f"installed_image:{self.agent_id}", body)])

    async def mark_kernel_presence(self, kernel_ids: Sequence[str], ttl: int = 300) -> None:
        """``kernel:presence:{kernel_id}`` ← ``{presence: "1", last_presence: <int seconds>}``
        for every running kernel: the manager asks ``check_running`` over RPC about each
        kernel whose mark is missing or stale, and reads the time as an integer."""
        now = str(int(time.time()))
        commands: list[tuple[Arg, ...]] = []
        for kernel_id in kernel_ids:
            key = f"kernel:presence:{kernel_id}"
            commands.append(("HSET", key, "presence", "1", "last_presence", now))
            commands.append(("EXPIRE", key, ttl))
        await self._call("kernel presence", "live", commands)

    async def mark_commits(self, kernel_ids: Sequence[str], ttl: int = 13) -> None:
        """``kernel.{kernel_id}.commit`` ← ``ongoing`` while a commit of the kernel runs (the
        manager reads a missing key as ``ready``); refreshed faster than ``ttl`` expires it."""
        await self._call("commit status", "stat", [
            ("SET", f"kernel.{kernel_id}.commit", "ongoing", "EX", ttl)
            for kernel_id in kernel_ids])

    async def write_service_record(self, record: ServiceRecord, ttl: int = 180) -> None:
        """``service_discovery.{group}.{id}`` ← hash of JSON values, expiring after ``ttl``."""
        key = f"service_discovery.{record.service_group}.{record.service_id}"
        fields = [a for k, v in record.metadata().items() for a in (k, json.dumps(v))]
        await self._call("service record", "stat", [
            ("HSET", key, *fields), ("EXPIRE", key, ttl)], transaction=True)

    async def delete_service_record(self, record: ServiceRecord) -> None:
        key = f"service_discovery.{record.service_group}.{record.service_id}"
        await self._call("service record", "stat", [("DEL", key)])

    async def write_slot_metadata(self, metadata: Mapping[str, Mapping[str, Any]]) -> None:
        """``computer.metadata`` ← hash ``{slot name: JSON display metadata}``."""
        if not metadata:
            return
        fields = [a for k, v in metadata.items() for a in (k, json.dumps(dict(v)))]
        await self._call("slot metadata", "stat", [("HSET", "computer.metadata", *fields)])

    async def push_container_logs(self, container_id: str, data: bytes,
                                  chunk_size: int = 64 * 1024, ttl: int = 3600) -> int:
        """Append ``data`` to ``containerlog.{container_id}`` as zlib+base64 JSON chunks."""
        key = f"containerlog.{container_id}"
        chunks = [encode_log_chunk(data[i:i + chunk_size])
                  for i in range(0, len(data), chunk_size)]
        if chunks:
            await self._call("container logs", "container_log", [
                *(("RPUSH", key, chunk) for chunk in chunks), ("EXPIRE", key, ttl)])
        return len(chunks)

    async def close(self) -> None:
        for client in self._clients.values():
            with _mapped("close"):
                await client.aclose()


def encode_log_chunk(chunk: bytes) -> str:
    content = base64.b64encode(zlib.compress(chunk)).decode()
    return json.dumps({"compress_type": "zlib", "content": content})


def decode_log_chunk(raw: str | bytes) -> bytes:
    data = json.loads(raw)
    return zlib.decompress(base64.b64decode(data["content"]))
