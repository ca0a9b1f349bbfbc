"""Pure conversion of one Docker stats API document (`GET /containers/{id}/stats?stream=0`)
into a `ContainerSample`, for the collector's fallback path (the caller does the request)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from berth.stats.blkio import LOOP_MAJOR
from berth.stats.models import (
    ContainerSample,
    CpuCounters,
    IoCounters,
    MemoryCounters,
    NetCounters,
    PidsCounters,
    SampleSource,
)


def _cpu(doc: Mapping[str, Any]) -> CpuCounters:
    usage = doc.get("cpu_stats", {}).get("cpu_usage", {})
    return CpuCounters(
        usage_ns=int(usage.get("total_usage", 0)),
        user_ns=usage.get("usage_in_usermode"),
        system_ns=usage.get("usage_in_kernelmode"),
    )


def _memory(doc: Mapping[str, Any]) -> MemoryCounters:
    mem = doc.get("memory_stats", {})
    stats = mem.get("stats", {})
    inactive = stats.get("total_inactive_file", stats.get("inactive_file", 0))
    limit = mem.get("limit")
    return MemoryCounters(
        usage=int(mem.get("usage", 0)),
        limit=int(limit) if limit else None,
        rss=stats.get("total_rss", stats.get("rss", stats.get("anon"))),
        cache=stats.get("total_cache", stats.get("cache", stats.get("file"))),
        inactive_file=int(inactive),
    )


def _io(doc: Mapping[str, Any]) -> IoCounters:
    read = write = 0
    for entry in doc.get("blkio_stats", {}).get("io_service_bytes_recursive") or []:
        op = str(entry.get("op", "")).lower()
        if entry.get("major") == LOOP_MAJOR:
            continue  # counted again on the backing disk (stats.blkio)
        if op == "read":
            read += int(entry.get("value", 0))
        elif op == "write":
            write += int(entry.get("value", 0))
    return IoCounters(read_bytes=read, write_bytes=write)


def _net(doc: Mapping[str, Any]) -> NetCounters:
    nets = (doc.get("networks") or {}).values()
    return NetCounters(rx_bytes=sum(int(n.get("rx_bytes", 0)) for n in nets),
                       tx_bytes=sum(int(n.get("tx_bytes", 0)) for n in nets))


def sample_from_docker_stats(doc: Mapping[str, Any], *, taken_at: float) -> ContainerSample:
    pids = doc.get("pids_stats") or {}
    return ContainerSample(
        taken_at=taken_at, cpu=_cpu(doc), memory=_memory(doc), io=_io(doc), net=_net(doc),
        pids=PidsCounters(int(pids["current"]), pids.get("limit")) if "current" in pids else None,
        source=SampleSource.DOCKER,
    )
