"""The warm pool's decisions, without I/O: can a pool container become this kernel exactly, what
must change on it live, how many to start, which to adopt after a restart.

A pool container is created from the same builder as a kernel's (a spec of the pool's shape and
no user), so a kernel whose own create config equals the pool container's in everything a
running container cannot change can take it over: only the environment (delivered to the runner
by the claim), the identity labels (the ledger names the kernel's container by id) and the
limits Docker's update API applies live (CPU quota, period and cpuset, memory, pids) may differ.
Anything else (mounts, ``/dev/shm``, devices, ports, user, network, a bootstrap script) sends
the create down the cold path, with the reason counted.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from berth.kernel.spec import KernelSpec

__all__ = [
    "LIVE_KEYS",
    "WARM_ID_LABEL",
    "WARM_POOL_LABEL",
    "WARM_RUNNER_FLAG",
    "MissReason",
    "PoolAdoption",
    "PoolContainer",
    "config_miss",
    "is_pool_container",
    "live_update",
    "plan_adoption",
    "plan_refill",
    "spec_miss",
]

WARM_POOL_LABEL = "berth.warm-pool"  # value: the image ref the member was started for
WARM_ID_LABEL = "berth.warm-pool.id"  # value: the member's id (its scratch dir's name)
WARM_RUNNER_FLAG = "--warm"  # the runner waits for its claim before it is ready



def is_pool_container(labels: Mapping[str, str]) -> bool:
    """A warm-pool container (idle, or claimed: labels cannot change on a container), not a
    kernel container made from an image that carries the pool's label (a commit of a claimed
    kernel: a commit can blank labels, not remove them)."""
    return bool(labels.get(WARM_POOL_LABEL)) and not labels.get("ai.backend.kernel-id")


# Resource keys Docker's update API changes on a running container (``docker update``).
LIVE_KEYS = ("CpuPeriod", "CpuQuota", "CpusetCpus", "CpusetMems", "CpuShares", "Memory",
             "MemorySwap", "MemoryReservation", "PidsLimit")

# Labels that are the kernel's identity (immutable on a container; the ledger carries it).
_IDENTITY_LABELS = ("ai.backend.kernel-id", "ai.backend.session-id", "ai.backend.owner-user-id",
                    "ai.backend.owner-project-id", WARM_POOL_LABEL, WARM_ID_LABEL)


class MissReason(StrEnum):
    """Why a create took the cold path (a closed set: the metric's label)."""

    NOT_POOLED = "image-not-pooled"
    EMPTY = "pool-empty"
    IMAGE_CHANGED = "image-changed"
    NO_RUNNER = "no-runner"
    BOOTSTRAP = "bootstrap"
    MOUNTS = "mounts"
    SHM = "shm"
    DEVICES = "devices"
    PORTS = "ports"
    USER = "user"
    NETWORK = "network"
    HOSTNAME = "hostname"
    BLKIO = "blkio"
    CONFIG = "config"
    CLAIM_FAILED = "claim-failed"


def spec_miss(spec: KernelSpec, *, default_uid: int, default_gid: int) -> MissReason | None:
    """What in the spec alone rules a pool container out (checked before one is taken)."""
    if spec.bootstrap_script:
        return MissReason.BOOTSTRAP
    if spec.mounts:
        return MissReason.MOUNTS
    if spec.shmem is not None:
        return MissReason.SHM
    if spec.preopen_ports or spec.cluster_role not in ("main", "master"):
        return MissReason.PORTS
    if ((spec.uid is not None and spec.uid != default_uid)
            or (spec.main_gid is not None and spec.main_gid != default_gid)
            or spec.supplementary_gids):
        return MissReason.USER
    if spec.cluster_info.network_name:
        return MissReason.NETWORK
    if spec.hostname() != "main1":
        return MissReason.HOSTNAME
    if any(k.startswith("io_") for k in spec.resource_opts):
        return MissReason.BLKIO
    return None


# The first differing key of a create config names the reason.
_REASONS: tuple[tuple[str, MissReason], ...] = (
    ("Image", MissReason.IMAGE_CHANGED),
    ("Cmd", MissReason.CONFIG),
    ("User", MissReason.USER),
    ("HostConfig.GroupAdd", MissReason.USER),
    ("HostConfig.Mounts", MissReason.MOUNTS),
    ("HostConfig.ShmSize", MissReason.SHM),
    ("HostConfig.Devices", MissReason.DEVICES),
    ("HostConfig.DeviceRequests", MissReason.DEVICES),
    ("HostConfig.DeviceCgroupRules", MissReason.DEVICES),
    ("HostConfig.PortBindings", MissReason.PORTS),
    ("ExposedPorts", MissReason.PORTS),
    ("HostConfig.NetworkMode", MissReason.NETWORK),
    ("NetworkingConfig", MissReason.NETWORK),
    ("Hostname", MissReason.HOSTNAME),
    ("HostConfig.Blkio", MissReason.BLKIO),
)


def _normalised(config: Mapping[str, Any], *, pool_dir: str = "", kernel_dir: str = ""
                ) -> dict[str, Any]:
    out = {k: v for k, v in config.items() if k not in ("Env", "Labels")}
    out["Labels"] = {k: v for k, v in (config.get("Labels") or {}).items()
                     if k not in _IDENTITY_LABELS and not k.startswith("ai.backend.agent")
                     and k != "ai.backend.owner"}
    out["Cmd"] = [a for a in (config.get("Cmd") or []) if a != WARM_RUNNER_FLAG]
    host = {k: v for k, v in (config.get("HostConfig") or {}).items() if k not in LIVE_KEYS}
    if pool_dir:
        host["Mounts"] = [_rebased(m, pool_dir, kernel_dir) for m in host.get("Mounts") or []]
    out["HostConfig"] = host
    return out


def _rebased(mount: Mapping[str, Any], old: str, new: str) -> dict[str, Any]:
    source = str(mount.get("Source") or "")
    if source == old or source.startswith(old + "/"):
        return {**mount, "Source": new + source[len(old):]}
    return dict(mount)


def _first_difference(a: Mapping[str, Any], b: Mapping[str, Any], prefix: str = "") -> str | None:
    for key in sorted(set(a) | set(b)):
        path = f"{prefix}{key}"
        va, vb = a.get(key), b.get(key)
        if isinstance(va, Mapping) and isinstance(vb, Mapping) and key == "HostConfig":
            found = _first_difference(va, vb, path + ".")
            if found:
                return found
        elif va != vb:
            return path
    return None


def config_miss(pool_config: Mapping[str, Any], kernel_config: Mapping[str, Any], *,
                pool_dir: str, kernel_dir: str) -> tuple[MissReason, str] | None:
    """None when the kernel's own create config equals the pool container's up to what a claim
    changes (env, identity labels, live limits, its scratch dir's new name); else the reason
    and the first differing key."""
    pool = _normalised(pool_config, pool_dir=pool_dir, kernel_dir=kernel_dir)
    kernel = _normalised(kernel_config)
    key = _first_difference(pool, kernel)
    if key is None:
        pool_live = set(pool_config.get("HostConfig") or {}).intersection(LIVE_KEYS)
        kernel_live = set(kernel_config.get("HostConfig") or {}).intersection(LIVE_KEYS)
        if pool_live - kernel_live:  # a limit the kernel would not have cannot be lifted live
            return MissReason.CONFIG, "HostConfig." + min(pool_live - kernel_live)
        return None
    for prefix, reason in _REASONS:
        if key.startswith(prefix):
            return reason, key
    return MissReason.CONFIG, key


def live_update(kernel_config: Mapping[str, Any]) -> dict[str, Any]:
    """The body of Docker's update call that gives a pool container the kernel's limits."""
    host = kernel_config.get("HostConfig") or {}
    return {k: host[k] for k in LIVE_KEYS if k in host}


def plan_refill(wanted: Mapping[str, int], max_total: int, have: Mapping[str, int]
                ) -> dict[str, int]:
    """How many to start per image: each image up to its size, all of them up to max_total,
    the emptiest image first (one at a time, round robin), so one image cannot starve another."""
    room = max_total - sum(have.values())
    counts = {image: have.get(image, 0) for image in wanted}
    plan: dict[str, int] = {}
    while room > 0:
        short = [i for i in sorted(wanted) if counts[i] < wanted[i]]
        if not short:
            break
        image = min(short, key=lambda i: (counts[i] / max(wanted[i], 1), i))
        counts[image] += 1
        plan[image] = plan.get(image, 0) + 1
        room -= 1
    return plan


@dataclass(frozen=True)
class PoolAdoption:
    adopt: tuple[str, ...]  # container ids taken back into the pool
    reap: tuple[str, ...]  # container ids to remove
    reap_scratch: tuple[str, ...]  # member ids whose scratch has no container to keep


@dataclass(frozen=True)
class PoolContainer:
    """What adoption needs to know of a container carrying the pool label."""

    id: str
    member_id: str
    image: str
    running: bool
    has_record: bool  # its member record (ledger) is readable in the pool's scratch


def plan_adoption(containers: Sequence[PoolContainer], claimed: Collection[str],
                  wanted: Mapping[str, int], max_total: int, scratch_ids: Collection[str]
                  ) -> PoolAdoption:
    """After a restart: a pool container a kernel claimed (its ledger names it) is that
    kernel's, never touched here; an unclaimed one is adopted when it runs, has its record, and
    its image is still configured with room left; every other one is reaped, and so is pool
    scratch without a container kept."""
    adopt: list[str] = []
    reap: list[str] = []
    kept_members: set[str] = set()
    counts: dict[str, int] = {}
    for c in sorted(containers, key=lambda c: c.id):
        if c.id in claimed:
            continue
        ok = (c.running and c.has_record and c.member_id in scratch_ids
              and counts.get(c.image, 0) < wanted.get(c.image, 0) and len(adopt) < max_total)
        if ok:
            adopt.append(c.id)
            kept_members.add(c.member_id)
            counts[c.image] = counts.get(c.image, 0) + 1
        else:
            reap.append(c.id)
    orphans = tuple(sorted(set(scratch_ids) - kept_members))
    return PoolAdoption(tuple(adopt), tuple(reap), orphans)
