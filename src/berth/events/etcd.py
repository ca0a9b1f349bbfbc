"""The etcd edge (Backend.AI key layout under ``/sorna/{namespace}/``), over ``etcd_gateway``.

Reads the global configuration the Manager keeps there (``config/redis``, ``volumes``,
``config/agent``, ``config/container``, ``config/plugins/...``) as nested dicts rebuilt from
flattened keys (each segment URL-quoted, as Backend.AI writes them), registers the node
(``nodes/agents/{id}`` = ``starting`` → ``running``, with ``ip`` and ``watcher_port``), waits
for ``nodes/manager`` and registers the metrics endpoint for service discovery
(``ai/backend/service_discovery/{group}/{id}/...``, reference §8.4).  It imports no etcd
library: ``berth.events.etcd_gateway`` (aiohttp, etcd's v3 JSON gateway) is its only wire, and
whatever that raises (``etcd_gateway.ERRORS``: etcd's errors, malformed replies, HTTP, socket,
timeout) becomes ``EtcdError`` in ``_mapped``.

``apply_etcd_overrides`` (pure) merges what etcd says into the local ``agent.toml`` dict.
"""

from __future__ import annotations

import asyncio
import copy
import json
import logging
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from types import TracebackType
from typing import Any, Self
from urllib.parse import quote, unquote

from berth.config import parse_host_port
from berth.errors import EtcdError
from berth.events.discovery import ServiceRecord
from berth.events.etcd_gateway import ERRORS, EtcdGateway, EventType, Watch, prefix_end

log = logging.getLogger(__name__)

SERVICE_DISCOVERY_PREFIX = "ai/backend/service_discovery"
GLOBAL_SECTIONS = {"redis": "config/redis", "volumes": "volumes", "agent": "config/agent",
                   "container": "config/container", "plugins": "config/plugins",
                   "watcher": "config/watcher"}


# What an etcd call's failure is, a key or value that is not UTF-8 included.
_MAPPED: tuple[type[Exception], ...] = (*ERRORS, UnicodeDecodeError)


@contextmanager
def _mapped(operation: str, key: str = "") -> Iterator[None]:
    try:
        yield
    except _MAPPED as exc:
        raise EtcdError(f"etcd {operation} {key} failed: {exc!r}", operation=operation,
                        key=key, cause=type(exc).__name__) from exc


def unflatten(pairs: Mapping[str, str]) -> dict[str, Any]:
    """``{"a/b": "1", "a/c": "2"}`` → ``{"a": {"b": "1", "c": "2"}}`` (segments unquoted)."""
    out: dict[str, Any] = {}
    for path, value in sorted(pairs.items()):
        parts = [unquote(p) for p in path.split("/") if p]
        if not parts:
            continue
        node = out
        for part in parts[:-1]:
            child = node.setdefault(part, {})
            if not isinstance(child, dict):
                child = node[part] = {"": child}
            node = child
        node[parts[-1]] = value
    return out


def flatten(tree: Mapping[str, Any], prefix: str = "") -> dict[str, str]:
    """Inverse of ``unflatten``: nested dict → ``{"quoted/path": str(value)}``."""
    out: dict[str, str] = {}
    for key, value in tree.items():
        path = f"{prefix}/{quote(str(key), safe='')}" if prefix else quote(str(key), safe="")
        if isinstance(value, Mapping):
            out.update(flatten(value, path))
        else:
            out[path] = str(value)
    return out


def _split_addr(addr: str) -> tuple[str, int]:
    try:
        return parse_host_port(addr, default_port=2379)
    except ValueError as exc:
        raise EtcdError(f"etcd address {addr[:80]!r}: {exc}", operation="connect") from exc


class EtcdConfigSource:
    """Async context manager around one etcd client scoped to ``/sorna/{namespace}/``; entering
    it checks that etcd answers (and, with ``user``/``password``, takes a token)."""

    def __init__(self, addr: str, namespace: str, user: str | None = None,
                 password: str | None = None, *, timeout: int = 5) -> None:
        host, port = _split_addr(addr)
        self.namespace = namespace
        self._prefix = f"/sorna/{namespace}/"
        self._client = EtcdGateway(host, port, user=user, password=password, timeout=timeout)

    async def __aenter__(self) -> Self:
        with _mapped("connect"):
            await self._client.__aenter__()  # closes itself when etcd does not answer
        return self

    async def __aexit__(self, et: type[BaseException] | None, e: BaseException | None,
                        tb: TracebackType | None) -> None:
        await self.close()

    async def close(self) -> None:
        with _mapped("close"):
            await self._client.close()

    def _key(self, path: str) -> bytes:
        return (self._prefix + path.strip("/")).encode()

    async def get(self, path: str) -> str | None:
        with _mapped("get", path):
            kvs = await self._client.range(self._key(path))
            return kvs[0].value.decode() if kvs else None

    async def get_prefix(self, path: str) -> dict[str, Any]:
        """All keys under ``path/`` as a nested dict (empty when none)."""
        base = self._key(path) + b"/"
        with _mapped("get_prefix", path):
            kvs = await self._client.range(base, prefix_end(base))
            return unflatten({kv.key[len(base):].decode(): kv.value.decode() for kv in kvs})

    async def put(self, path: str, value: str) -> None:
        with _mapped("put", path):
            await self._client.put(self._key(path), value.encode())

    async def put_tree(self, path: str, tree: Mapping[str, Any]) -> None:
        for sub, value in flatten(tree).items():
            await self.put(f"{path.strip('/')}/{sub}", value)

    async def delete(self, path: str) -> None:
        with _mapped("delete", path):
            await self._client.delete_range(self._key(path))

    async def delete_prefix(self, path: str) -> None:
        """Delete ``path`` itself and everything under ``path/``."""
        await self.delete(path)
        base = self._key(path) + b"/"
        with _mapped("delete_prefix", path):
            await self._client.delete_range(base, prefix_end(base))

    # ── what the agent reads ───────────────────────────────────────────────────────────

    async def read_global_config(self) -> dict[str, dict[str, Any]]:
        """``{"redis", "volumes", "agent", "container", "plugins", "watcher"}`` from etcd."""
        return {name: await self.get_prefix(path) for name, path in GLOBAL_SECTIONS.items()}

    async def wait_for_manager(self, timeout: float | None = None) -> None:
        """Return once ``nodes/manager`` has a key, or a PUT of value ``up`` arrives there.

        The watch is open before the read, so a manager that registers in between is seen."""
        base = self._key("nodes/manager")
        with _mapped("watch", "nodes/manager"):
            watch = await self._client.watch(base, prefix_end(base))
        async with watch:
            if await self.get_prefix("nodes/manager"):
                return
            log.info("waiting for a manager to register in etcd (%s)", base.decode())
            async with asyncio.timeout(timeout):
                await _until_up(watch)

    # ── what the agent writes ──────────────────────────────────────────────────────────

    async def register_agent(self, agent_id: str, ip: str, watcher_port: int) -> None:
        await self.put(f"nodes/agents/{agent_id}", "starting")
        await self.put(f"nodes/agents/{agent_id}/ip", ip)
        await self.put(f"nodes/agents/{agent_id}/watcher_port", str(watcher_port))

    async def mark_running(self, agent_id: str) -> None:
        await self.put(f"nodes/agents/{agent_id}", "running")

    async def deregister_agent(self, agent_id: str) -> None:
        await self.delete_prefix(f"nodes/agents/{agent_id}")

    async def register_service(self, record: ServiceRecord) -> None:
        """Put (or refresh) the discovery record of ``record``'s endpoint."""
        await self.put_tree(_service_path(record), record.metadata())

    async def unregister_service(self, record: ServiceRecord) -> None:
        await self.unregister(_service_path(record))

    async def unregister(self, path: str) -> None:
        await self.delete_prefix(path)


async def _until_up(watch: Watch) -> None:
    with _mapped("watch", "nodes/manager"):
        async for ev in watch:
            if ev.type == EventType.PUT and ev.value == b"up":
                return


def _service_path(record: ServiceRecord) -> str:
    return f"{SERVICE_DISCOVERY_PREFIX}/{record.service_group}/{record.service_id}"


_AGENT_OVERRIDABLE = ("api", "container-logs", "kernel-lifecycles")
_CONTAINER_OVERRIDABLE = ("kernel-uid", "kernel-gid")


def _merge(dst: dict[str, Any], src: Mapping[str, Any]) -> None:
    for k, v in src.items():
        if isinstance(v, Mapping) and isinstance(dst.get(k), dict):
            _merge(dst[k], v)
        else:
            dst[k] = copy.deepcopy(v) if isinstance(v, Mapping) else v


def apply_etcd_overrides(local: Mapping[str, Any],
                         global_cfg: Mapping[str, Mapping[str, Any]]) -> dict[str, Any]:
    """Overlay etcd's global config on the local ``agent.toml`` dict (local is not modified).

    * ``config/agent/{api,container-logs,kernel-lifecycles}`` override those sections;
    * ``config/container/{kernel-uid,kernel-gid}`` override ``[container]``;
    * ``config/redis``, ``config/plugins`` and ``volumes`` are injected as ``redis``,
      ``plugins`` and ``volumes`` (a local ``[redis]`` keeps keys etcd does not set); of
      ``config/redis`` only ``addr`` and ``password`` are taken, the rest is logged.
    Values stay strings as etcd stores them; the typed config validates them afterwards.
    """
    out: dict[str, Any] = copy.deepcopy(dict(local))
    agent = global_cfg.get("agent", {})
    for section in _AGENT_OVERRIDABLE:
        if isinstance(agent.get(section), Mapping):
            _merge(out.setdefault(section, {}), agent[section])
    container = global_cfg.get("container", {})
    for key in _CONTAINER_OVERRIDABLE:
        if key in container:
            out.setdefault("container", {})[key] = container[key]
    redis = _known_redis_keys(global_cfg.get("redis") or {})
    for section, value in (("redis", redis), ("plugins", global_cfg.get("plugins")),
                           ("volumes", global_cfg.get("volumes"))):
        if value:
            if not isinstance(out.get(section), dict):
                out[section] = {}
            _merge(out[section], value)
    return out


# The keys of etcd's ``config/redis`` that the agent uses; a standard Backend.AI install also
# keeps sentinel, TLS, helper timeouts and per-role overrides there, which are logged and left.
_REDIS_KEYS = ("addr", "password")


def _known_redis_keys(redis: Mapping[str, Any]) -> dict[str, Any]:
    ignored = sorted(k for k in redis if k not in _REDIS_KEYS)
    if ignored:
        log.info("etcd config/redis: not used by this agent, ignored: %s", ", ".join(ignored))
    known = {k: redis[k] for k in _REDIS_KEYS if k in redis}
    if isinstance(known.get("addr"), str):
        known["addr"] = known["addr"].removeprefix("redis://").removeprefix("tcp://")
    return known


def decode_json_value(raw: str | None) -> Any:
    """Helper for values stored as JSON (e.g. lists) rather than flattened keys."""
    return None if raw is None else json.loads(raw)
