"""The manager's side of the message queue, with its own classes (runs inside berth/bai-compat).

What the manager does (ai.backend.manager.dependencies.messaging.message_queue and
ai.backend.common.message_queue.redis_queue): one ValkeyStreamClient on REDIS_STREAM_DB
creates the consumer group ``manager`` on the ``events`` stream at ``$`` and reads it with
XREADGROUP; every entry becomes an AnycastMessagePayload (from_stream_fields) and then the
event class the dispatcher consumes (from_message); a second client subscribed to
``events_all`` turns every pub/sub message into a BroadcastMessagePayload (from_json) and
then the class AbstractBroadcastEvent.from_broadcast_payload resolves by name. Anycast classes
have no registry in the manager (each handler names its class), so the name -> class map is
built from every anycast class in ai.backend.common.events.event_types.

Every entry and message is kept with its decoding outcome: a failure is recorded, never
skipped, so a script can report "zero decode failures" honestly.
"""

from __future__ import annotations

import asyncio
import importlib
import inspect
import pkgutil
import time
from collections.abc import Callable
from typing import Any, Self

from ai.backend.common.clients.valkey_client.valkey_stream.client import ValkeyStreamClient
from ai.backend.common.defs import REDIS_STREAM_DB
from ai.backend.common.events import event_types
from ai.backend.common.events.fetcher import EventFetcher
from ai.backend.common.events.message import EventMessage
from ai.backend.common.events.types import AbstractAnycastEvent, AbstractBroadcastEvent
from ai.backend.common.message_queue.payload import AnycastMessagePayload, BroadcastMessagePayload
from ai.backend.common.message_queue.redis_queue.consumer import _generate_consumer_id
from ai.backend.common.types import ValkeyTarget
from harness import env

STREAM, CHANNEL, GROUP = "events", "events_all", "manager"


def valkey_target() -> ValkeyTarget:
    return ValkeyTarget(addr=env("BERTH_REDIS_ADDR"))


def anycast_classes() -> dict[str, list[type[AbstractAnycastEvent]]]:
    """event name -> the manager's anycast classes of that name (normally exactly one)."""
    found: dict[str, list[type[AbstractAnycastEvent]]] = {}
    for info in pkgutil.walk_packages(event_types.__path__, event_types.__name__ + "."):
        module = importlib.import_module(info.name)
        for obj in vars(module).values():
            if (inspect.isclass(obj) and obj.__module__ == module.__name__
                    and issubclass(obj, AbstractAnycastEvent) and not inspect.isabstract(obj)):
                try:
                    name = obj.event_name()
                except Exception:  # noqa: BLE001, S112 - an intermediate base without a name
                    continue
                found.setdefault(name, []).append(obj)
    return found


def _dump(event: Any) -> dict[str, Any]:
    out = {"class": f"{type(event).__module__}.{type(event).__qualname__}",
           "body": event.model_dump(mode="json")}
    image_ref = getattr(event, "image_ref", None)
    if image_ref is not None:  # what the image handlers match the image row by
        out["image_ref_canonical"] = image_ref.canonical
    return out


class ManagerQueue:
    """The consumer group and the subscription, opened before the agent is asked to act."""

    def __init__(self) -> None:
        self.classes = anycast_classes()
        self.anycast: list[dict[str, Any]] = []     # {id, name, source, class, body} | {id, error}
        self.broadcast: list[dict[str, Any]] = []   # {name, source, class, body} | {error, raw}
        self._stream: ValkeyStreamClient | None = None
        self._pubsub: ValkeyStreamClient | None = None
        self._reader: asyncio.Task[None] | None = None
        self._consumer = _generate_consumer_id("berth-compat")

    async def __aenter__(self) -> Self:
        self._stream = await ValkeyStreamClient.create(
            valkey_target(), db_id=REDIS_STREAM_DB, human_readable_name="compat-consumer")
        try:
            await self._stream.make_consumer_group(STREAM, GROUP)  # XGROUP CREATE ... $ MKSTREAM
        except Exception:  # noqa: BLE001, S110 - it exists already (as RedisConsumer.create)
            pass
        self._pubsub = await ValkeyStreamClient.create(
            valkey_target(), db_id=REDIS_STREAM_DB, human_readable_name="compat-subscriber",
            pubsub_channels={CHANNEL})
        self._reader = asyncio.create_task(self._read_broadcasts())
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self._reader is not None:
            self._reader.cancel()
        for client in (self._stream, self._pubsub):
            if client is not None:
                await client.close()

    # ------------------------------------------------------------------ anycast
    def decode_anycast(self, msg_id: bytes, fields: Any) -> dict[str, Any]:
        entry: dict[str, Any] = {"id": msg_id.decode()}
        try:
            payload = AnycastMessagePayload.from_stream_fields(fields)
        except Exception as exc:  # noqa: BLE001 - recorded as a failure
            return {**entry, "error": f"{type(exc).__name__}: {exc}",
                    "raw": {k.decode(): v.decode(errors="replace") for k, v in fields.items()}}
        entry.update(name=payload.name, source=payload.legacy_source)
        classes = self.classes.get(payload.name)
        if not classes:
            return {**entry, "error": f"the manager has no anycast class named {payload.name}"}
        message = EventMessage(name=payload.name, payload=payload.payload)
        try:
            decoded = [cls.from_message(message) for cls in classes]
        except Exception as exc:  # noqa: BLE001 - recorded as a failure
            return {**entry, "error": f"{type(exc).__name__}: {exc}", "payload": payload.payload}
        return {**entry, **_dump(decoded[0])}

    async def drain(self, block_ms: int = 200) -> int:
        """XREADGROUP until nothing is pending; decode and ack every entry. Returns the count."""
        assert self._stream is not None
        count = 0
        while True:
            messages = await self._stream.read_consumer_group(
                STREAM, GROUP, self._consumer, count=64, block_ms=block_ms)
            if not messages:
                return count
            for msg in messages:
                self.anycast.append(self.decode_anycast(msg.msg_id, msg.payload))
                await self._stream.done_stream_message(STREAM, GROUP, msg.msg_id)
                count += 1

    # ------------------------------------------------------------------ broadcast
    @staticmethod
    def decode_broadcast(payload: BroadcastMessagePayload) -> dict[str, Any]:
        entry: dict[str, Any] = {"name": payload.name, "source": payload.legacy_source}
        try:
            event = AbstractBroadcastEvent.from_broadcast_payload(payload)
        except Exception as exc:  # noqa: BLE001 - recorded as a failure
            return {**entry, "error": f"{type(exc).__name__}: {exc}", "payload": payload.payload}
        return {**entry, **_dump(event)}

    async def _read_broadcasts(self) -> None:
        assert self._pubsub is not None
        while True:
            try:
                payload = await self._pubsub.receive_broadcast_message()
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # noqa: BLE001 - the subscriber would drop it: a failure
                self.broadcast.append({"error": f"{type(exc).__name__}: {exc}"})
                continue
            self.broadcast.append(self.decode_broadcast(payload))

    async def fetch_cached(self, cache_id: str) -> dict[str, Any] | None:
        """EventFetcher.fetch_cached_event, as the manager's REST/GQL bgtask readers use it."""
        assert self._stream is not None
        fetcher = EventFetcher(self._stream)  # type: ignore[arg-type]  # the queue's one method
        try:
            event = await fetcher.fetch_cached_event(cache_id)
        except Exception as exc:  # noqa: BLE001 - recorded as a failure
            return {"error": f"{type(exc).__name__}: {exc}"}
        return None if event is None else _dump(event)

    # ------------------------------------------------------------------ waiting
    async def wait_for(self, what: str, found: Callable[[], Any], timeout: float) -> Any:
        """Drain until ``found()`` is truthy; return it, or raise TimeoutError naming ``what``."""
        deadline = time.monotonic() + timeout
        while True:
            await self.drain()
            result = found()
            if result:
                return result
            if time.monotonic() > deadline:
                raise TimeoutError(f"no {what} within {timeout} s")
            await asyncio.sleep(0.2)

    def anycast_named(self, name: str, **body: Any) -> list[dict[str, Any]]:
        return [e for e in self.anycast if e.get("name") == name and "error" not in e
                and all(e["body"].get(k) == v for k, v in body.items())]

    def broadcast_named(self, name: str, **body: Any) -> list[dict[str, Any]]:
        return [e for e in self.broadcast if e.get("name") == name and "error" not in e
                and all(e["body"].get(k) == v for k, v in body.items())]

    def failures(self) -> list[dict[str, Any]]:
        return ([{"via": "stream", **e} for e in self.anycast if "error" in e]
                + [{"via": "pubsub", **e} for e in self.broadcast if "error" in e])

    def summary(self) -> dict[str, Any]:
        return {"anycast": self.anycast, "broadcast": self.broadcast,
                "failures": self.failures()}
