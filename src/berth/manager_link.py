"""Everything the Manager learns from this node: events, heartbeats, Redis keys, etcd presence.

Optional by configuration: without ``[redis]`` events are only logged; without ``[etcd]`` the
local ``agent.toml`` is the whole configuration.
"""

from __future__ import annotations

import logging
import platform
from collections.abc import Callable
from typing import Any

from berth import __version__
from berth.bgtask import BackgroundTaskManager
from berth.config import AgentConfig, parse_host_port
from berth.events import (
    AgentInfo,
    AgentStartedEvent,
    AgentTerminatedEvent,
    EventBus,
    Heartbeat,
    ManagerStore,
    SlotQuantity,
)
from berth.events.models import AgentEvent
from berth.resources.allocator import ResourceManager
from berth.stats import StatsSnapshot

__all__ = ["LogEmitter", "ManagerLink", "redis_url"]

log = logging.getLogger(__name__)


class LogEmitter:
    """The emitter when no Redis is configured: events go to the debug log."""

    def emit(self, event: AgentEvent, *, coalesce: bool = False) -> None:
        log.debug("event %s %s", event.name, event.payload_json())


def redis_url(config: AgentConfig) -> str | None:
    if config.redis is None:
        return None
    host, port = parse_host_port(config.redis.addr, default_port=6379)
    auth = f":{config.redis.password}@" if config.redis.password else ""
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
            self.store = ManagerStore(url, config.agent.id)
        self.emitter: EventBus | LogEmitter = self.bus or LogEmitter()
        self.tasks = BackgroundTaskManager(self.emitter)
        self.heartbeat: Heartbeat | None = None
        self._on_beat: Callable[[], None] | None = None

    async def start(self, resources: ResourceManager, images: Any, *,
                    on_beat: Callable[[], None] | None = None) -> None:
        """``on_beat`` is called as each heartbeat is emitted (the Prometheus gauge)."""
        self.resources = resources
        self._on_beat = on_beat
        if self.bus is not None:
            await self.bus.start()
            self.heartbeat = Heartbeat(self.bus, self._heartbeat_info,
                                       self.config.debug.heartbeat_interval,
                                       images=images.list_installed, store=self.store)
            self.heartbeat.start()
        self.emitter.emit(AgentStartedEvent(reason="self-started"))

    async def close(self) -> None:
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

    async def publish_stats(self, snapshot: StatsSnapshot) -> None:
        if self.store is None:
            return
        if snapshot.node is not None:
            await self.store.write_node_stats(snapshot.node.to_wire(),
                                              ttl=4 * self.config.debug.stats_interval)
        for kernel_id, stats in snapshot.kernels.items():
            await self.store.write_kernel_stats(kernel_id, stats.to_wire())
        await self.store.write_container_count(len(snapshot.kernels))
