"""Service discovery: how the node's metrics endpoint is announced to the Manager.

The Backend.AI 26.9 manager finds services three ways, and Berth feeds all three from one
record built here (pure):

* etcd: the record flattened under ``ai/backend/service_discovery/{group}/{id}/``;
* Redis: a hash ``service_discovery.{group}.{id}`` in DB 0 whose fields are JSON values,
  expiring unless refreshed (the manager's default backend);
* events: ``service_registered`` on the stream, repeated as a heartbeat, and
  ``service_deregistered`` at a clean stop.

The record's ``id`` must be a UUID (the manager's discovery listing fails as a whole on one
that is not); like the manager's own ``for_endpoint`` it is derived from the group and the
Prometheus address, so a restarted node keeps its id. ``last_heartbeat`` moves with every
refresh; the manager sweeps records whose heartbeat is older than five minutes.
"""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

log = logging.getLogger(__name__)

SERVICE_GROUP = "agent"
REFRESH_INTERVAL = 60.0

Publisher = Callable[["ServiceRecord"], Awaitable[None]]


@dataclass(frozen=True, slots=True)
class ServiceRecord:
    """One announced endpoint at one moment (``last_heartbeat``)."""

    agent_id: str
    version: str
    address: str
    port: int
    protocol: str
    registered_at: float
    last_heartbeat: float
    service_group: str = SERVICE_GROUP

    @property
    def prometheus_address(self) -> str:
        return f"{self.address}:{self.port}"

    @property
    def service_id(self) -> str:
        name = f"{self.service_group}/{self.prometheus_address}"
        return str(uuid.uuid5(uuid.NAMESPACE_DNS, name))

    @property
    def display_name(self) -> str:
        return f"agent-{self.agent_id}"

    def refreshed(self, now: float) -> ServiceRecord:
        return ServiceRecord(self.agent_id, self.version, self.address, self.port,
                             self.protocol, self.registered_at, now, self.service_group)

    def metadata(self) -> dict[str, Any]:
        """The manager's ``ServiceMetadata`` as plain JSON values."""
        return {
            "id": self.service_id, "display_name": self.display_name,
            "service_group": self.service_group, "version": self.version,
            "endpoint": {"address": self.address, "port": self.port, "protocol": self.protocol,
                         "prometheus_address": self.prometheus_address},
            "health_status": {"registration_time": self.registered_at,
                              "last_heartbeat": self.last_heartbeat},
            "labels": {"agent_id": self.agent_id},
        }

    def registered_event_body(self) -> dict[str, Any]:
        """The body of ``service_registered`` (an instance id is any string there)."""
        return {
            "instance_id": self.agent_id, "service_group": self.service_group,
            "display_name": self.display_name, "version": self.version,
            "labels": {"agent_id": self.agent_id},
            "endpoints": [{"role": "metrics", "scope": "internal", "address": self.address,
                           "port": self.port, "protocol": self.protocol, "metadata": {}}],
            "startup_time": datetime.fromtimestamp(self.registered_at, UTC).isoformat(),
            "config_hash": "",
        }


class ServiceAnnouncer:
    """Publishes the record now and every ``interval`` seconds to each publisher; one
    publisher failing is logged and does not stop the others."""

    def __init__(self, record: ServiceRecord, publishers: Sequence[Publisher],
                 interval: float = REFRESH_INTERVAL,
                 clock: Callable[[], float] = time.time) -> None:
        self.record = record
        self._publishers = list(publishers)
        self._interval = interval
        self._clock = clock
        self._task: asyncio.Task[None] | None = None

    async def publish(self) -> None:
        self.record = self.record.refreshed(self._clock())
        for publish in self._publishers:
            try:
                await publish(self.record)
            except Exception as exc:  # noqa: BLE001 - one sink down must not stop the rest
                log.warning("service discovery: %s failed: %s", publish, exc)

    async def start(self) -> None:
        await self.publish()
        self._task = asyncio.create_task(self._run(), name="service-discovery")

    async def _run(self) -> None:
        while True:
            await asyncio.sleep(self._interval)
            await self.publish()

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
            self._task = None
