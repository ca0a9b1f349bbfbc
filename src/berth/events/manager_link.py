"""Everything the Manager learns from this node: events, heartbeats, Redis keys, etcd presence.

Optional by configuration: without ``[redis]`` events are only logged; without ``[etcd]`` the
local ``agent.toml`` is the whole configuration.
"""

from __future__ import annotations

import logging
import platform
from collections.abc import Callable, Iterable, Sequence
from typing import Any
from urllib.parse import quote

from berth import __version__
from berth.config import AgentConfig, parse_host_port
from berth.errors import BerthError
from berth.events.bgtask import BackgroundTaskManager
from berth.events.bus import EventBus, ManagerStore
from berth.events.discovery import Publisher, ServiceAnnouncer, ServiceRecord
from berth.events.heartbeat import Heartbeat
from berth.events.models import (
    AgentEvent,
    AgentInfo,
    AgentStartedEvent,
    AgentTerminatedEvent,
    DoSyncKernelLogsEvent,
    ServiceDeregisteredEvent,
    ServiceRegisteredEvent,
    SlotQuantity,
)
from berth.resources import ResourceManager
from berth.stats import StatsSnapshot

__all__ = ["LogEmitter", "ManagerLink", "redis_url"]

log = logging.getLogger(__name__)


class LogEmitter:
    """The emitter when no Redis is configured: events go to the debug log."""

    pending = 0  # nothing is queued, nothing dropped
    dropped = 0

    def emit(self, event: AgentEvent, *, coalesce: bool = False) -> None:
        log.debug("event %s %s", event.name, event.payload_json())


def redis_url(config: AgentConfig) -> str | None:
    if config.redis is None:
        return None
    host, port = parse_host_port(config.redis.addr, default_port=6379)
    auth = f":{quote(config.redis.password, safe='')}@" if config.redis.password else ""
    host = f"[{host}]" if ":" in host else host  # an IPv6 literal
    return f"redis://{auth}{host}:{port}/{config.redis.db}"


class ManagerLink:
    def __init__(self, config: AgentConfig, public_key: str | None) -> None:
        self.config = config
        self.public_key = public_key
        url = redis_url(config)
        self.bus: EventBus | None = None
        self.store: ManagerStore | None = None
        if url is not None:
            self.bus = EventBus(url, config.agent.id, config.redis.backlog_size
                                if config.redis else 4096)
            self.store = ManagerStore(url, config.agent.id,
                                      db_overrides=config.redis.role_dbs() if config.redis else None)
        self.emitter: EventBus | LogEmitter = self.bus or LogEmitter()
        self.tasks = BackgroundTaskManager(self.emitter)
        self.heartbeat: Heartbeat | None = None
        self.announcer: ServiceAnnouncer | None = None
        # Kernels with a commit running (the agent wires its commit service in).
        self.committing: Callable[[], Iterable[str]] = tuple
        self._on_beat: Callable[[], None] | None = None

    async def start(self, resources: ResourceManager, images: Any, *,
                    on_beat: Callable[[], None] | None = None,
                    committing: Callable[[], Iterable[str]] = tuple) -> None:
        """``on_beat`` is called as each heartbeat is emitted (the Prometheus gauge).

        The first heartbeat goes out before ``agent_started``: the manager registers a node
        from its heartbeat and skips an ``agent_started`` from a node it does not know."""
        self.resources = resources
        self._on_beat = on_beat
        self.committing = committing
        if self.bus is not None:
            await self.bus.start()
            self.heartbeat = Heartbeat(self.bus, self._heartbeat_info,
                                       self.config.debug.heartbeat_interval,
                                       images=images.list_installed, store=self.store)
            await self._write_slot_metadata()
            await self.heartbeat.beat()
            self.heartbeat.start(first_delay=self.config.debug.heartbeat_interval)
        self.emitter.emit(AgentStartedEvent(reason="self-started"))

    async def _write_slot_metadata(self) -> None:
        """``computer.metadata``: how the manager's UI names and formats each slot."""
        if self.store is None:
            return
        metadata: dict[str, Any] = {}
        for plugin in self.resources.plugins:
            metadata.update(plugin.get_metadata())
        try:
            await self.store.write_slot_metadata(metadata)
        except BerthError as exc:
            log.warning("could not write slot metadata: %s", exc)

    async def announce(self, record: ServiceRecord,
                       extra: Sequence[Publisher] = ()) -> None:
        """Announce the metrics endpoint now and every minute: on the events stream, in
        Redis (the manager's default discovery backend) and through ``extra`` (etcd)."""
        publishers: list[Publisher] = list(extra)
        if self.store is not None:
            publishers.append(self.store.write_service_record)
        publishers.append(self._emit_registered)
        self.announcer = ServiceAnnouncer(record, publishers)
        await self.announcer.start()

    async def _emit_registered(self, record: ServiceRecord) -> None:
        self.emitter.emit(ServiceRegisteredEvent.model_validate(record.registered_event_body()))

    async def _withdraw(self) -> None:
        if self.announcer is None:
            return
        await self.announcer.stop()
        record = self.announcer.record
        self.emitter.emit(ServiceDeregisteredEvent(instance_id=record.agent_id,
                                                   service_group=record.service_group))
        if self.store is not None:
            try:
                await self.store.delete_service_record(record)
            except BerthError as exc:
                log.warning("could not remove the service record: %s", exc)

    async def mark_presence(self, kernel_ids: Sequence[str]) -> None:
        """Tell the manager these kernels are alive (it asks ``check_running`` otherwise)."""
        if self.store is None:
            return
        try:
            await self.store.mark_kernel_presence(kernel_ids)
        except BerthError as exc:
            log.debug("kernel presence not written: %s", exc)

    async def close(self) -> None:
        await self._withdraw()
        self.emitter.emit(AgentTerminatedEvent(reason="shutdown"))
        await self.tasks.shutdown()
        if self.heartbeat is not None:
            await self.heartbeat.stop()
        if self.bus is not None:
            await self.bus.close()
        if self.store is not None:
            await self.store.close()

    async def _heartbeat_info(self) -> AgentInfo:
        info = await self.agent_info()
        if self._on_beat is not None:
            self._on_beat()
        return info

    async def agent_info(self) -> AgentInfo:
        a, c = self.config.agent, self.config.container
        host, port = parse_host_port(a.advertised_rpc_addr or a.rpc_listen_addr)
        res = self.resources
        return AgentInfo(
            ip=host, region=a.region, scaling_group=a.scaling_group,
            addr=f"tcp://{host}:{port}", public_key=self.public_key,
            public_host=c.advertised_host or c.bind_host,
            available_resource_slots=[SlotQuantity(resource_type=k, quantity=str(v))
                                      for k, v in res.total_slots().items()],
            slot_key_and_units={k: str(v) for k, v in res.slot_types().items()},
            version=__version__,
            compute_plugins={p.key: {"version": __version__, **p.extra_info()}
                             for p in res.plugins},
            architecture=platform.machine(),
        )

    async def ship_logs(self, kernel_id: str, container_id: str, logs: str) -> None:
        """``containerlog.{container_id}`` chunks, where the Manager reads a dead kernel's
        output (Backend.AI's container-log keys)."""
        if self.store is not None:
            await self.store.push_container_logs(container_id, logs.encode(),
                                                 chunk_size=self.config.container_logs.chunk_size)
            # The manager moves the chunks into its database only when told to.
            self.emitter.emit(DoSyncKernelLogsEvent(kernel_id=kernel_id,
                                                    container_id=container_id))

    async def publish_stats(self, snapshot: StatsSnapshot) -> None:
        if self.store is None:
            return
        if snapshot.node is not None:
            await self.store.write_node_stats(snapshot.node.to_wire(),
                                              ttl=4 * self.config.debug.stats_interval)
        for kernel_id, stats in snapshot.kernels.items():
            await self.store.write_kernel_stats(kernel_id, stats.to_wire())
        await self.store.write_container_count(len(snapshot.kernels))
        await self.mark_presence(list(snapshot.kernels))
        await self.store.mark_commits(list(self.committing()),
                                      ttl=max(13, int(3 * self.config.debug.stats_interval)))
