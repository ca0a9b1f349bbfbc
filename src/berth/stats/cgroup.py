"""Pure parsers of cgroupfs (v1 and v2), /proc/<pid>/cgroup, /proc/mounts and /proc/<pid>/net/dev.

Nothing here touches the filesystem: each function takes file contents and returns values.
`berth.stats.cgroupfs` does the reading.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from berth.stats.blkio import LOOP_MAJOR
from berth.stats.models import (
    CgroupVersion,
    ContainerSample,
    CpuCounters,
    IoCounters,
    MemoryCounters,
    NetCounters,
    PidsCounters,
)

HOST_CGROUP_ROOT = PurePosixPath("/sys/fs/cgroup")
# cgroup v1 reports "no limit" as a page-rounded LONG_MAX; anything this large is unlimited.
_V1_UNLIMITED = 1 << 62
V1_CONTROLLERS = ("cpu", "cpuacct", "memory", "blkio", "pids")

# Which v1 controller hierarchy holds each file the collector reads: only files whose values
# are exported (derive.py's metrics, the OOM counter), as each read costs a syscall per
# container per cycle (throttling counters and memory.failcnt are not read).
V1_FILES: Mapping[str, str] = {
    "cpuacct.usage": "cpuacct", "cpuacct.stat": "cpuacct",
    "cpu.cfs_quota_us": "cpu", "cpu.cfs_period_us": "cpu",
    "memory.usage_in_bytes": "memory", "memory.limit_in_bytes": "memory",
    "memory.stat": "memory", "memory.oom_control": "memory",
    "blkio.throttle.io_service_bytes": "blkio",
    "pids.current": "pids", "pids.max": "pids",
}
V2_FILES = ("cpu.stat", "cpu.max", "memory.current", "memory.max", "memory.stat",
            "memory.swap.current", "memory.events", "io.stat", "pids.current", "pids.max")


class CgroupParseError(ValueError):
    """A cgroup file did not have the expected shape."""


def parse_int(text: str) -> int | None:
    """A single-number file; `max` (v2 "no limit") gives None."""
    value = text.strip()
    if value == "max":
        return None
    try:
        return int(value)
    except ValueError as exc:
        raise CgroupParseError(f"not an integer: {value!r}") from exc


def parse_v1_limit(text: str) -> int | None:
    value = parse_int(text)
    return None if value is None or value >= _V1_UNLIMITED else value


def parse_keyed(text: str) -> dict[str, int]:
    """`key value` lines (memory.stat, cpu.stat, cpuacct.stat, memory.events, oom_control)."""
    result: dict[str, int] = {}
    for line in text.splitlines():
        parts = line.split()
        if len(parts) == 2 and parts[1].lstrip("-").isdigit():
            result[parts[0]] = int(parts[1])
    return result


def parse_fields(text: str, keys: tuple[str, ...]) -> dict[str, int]:
    """Only `keys` of a `key value` file: the stats cycle's path, which needs 3 of the ~40
    lines of memory.stat (a search per key, not a split of every line)."""
    hay = "\n" + text
    result: dict[str, int] = {}
    for key in keys:
        start = hay.find(f"\n{key} ")
        if start < 0:
            continue
        start += len(key) + 2
        end = hay.find("\n", start)
        value = hay[start:] if end < 0 else hay[start:end]
        if value.lstrip("-").isdigit():
            result[key] = int(value)
    return result


_V1_CPU_TICKS = ("user", "system")
_V1_MEMORY = ("total_rss", "total_cache", "total_swap", "total_inactive_file")
_V1_MEMORY_FLAT = ("rss", "cache", "swap", "inactive_file")  # without hierarchy totals
_OOM_KILL = ("oom_kill",)
_V2_CPU = ("usage_usec", "user_usec", "system_usec")
_V2_MEMORY = ("anon", "file", "inactive_file")


def _loop_device(field: str) -> bool:
    """A `MAJ:MIN` of a loop device: its bytes reach the backing disk again, counted there
    under the same cgroup (stats.blkio), so they are not summed twice."""
    return field.split(":", 1)[0] == str(LOOP_MAJOR)


def parse_blkio_v1(text: str) -> IoCounters:
    """`MAJ:MIN Read|Write|... N` lines summed over devices; the bare `Total N` line and loop
    devices are skipped."""
    read = write = 0
    for line in text.splitlines():
        parts = line.split()
        if len(parts) != 3:
            continue
        op = parts[1]
        if op == "Read" and not _loop_device(parts[0]):
            read += int(parts[2])
        elif op == "Write" and not _loop_device(parts[0]):
            write += int(parts[2])
    return IoCounters(read_bytes=read, write_bytes=write)


def parse_io_stat_v2(text: str) -> IoCounters:
    """`MAJ:MIN rbytes=N wbytes=N ...` lines (v2 io.stat) summed over devices but loops."""
    read = write = 0
    for line in text.splitlines():
        if _loop_device(line.split(" ", 1)[0]):
            continue
        for field in line.split()[1:]:
            key, _, value = field.partition("=")
            if key == "rbytes":
                read += int(value)
            elif key == "wbytes":
                write += int(value)
    return IoCounters(read_bytes=read, write_bytes=write)


def parse_net_dev(text: str, exclude: frozenset[str] = frozenset({"lo"})) -> NetCounters:
    """/proc/<pid>/net/dev of the container's netns, summed over interfaces not excluded."""
    rx = tx = 0
    for line in text.splitlines()[2:]:
        name, sep, rest = line.partition(":")
        if not sep or name.strip() in exclude:
            continue
        cols = rest.split()
        if len(cols) < 9:
            raise CgroupParseError(f"short net/dev line: {line!r}")
        rx += int(cols[0])
        tx += int(cols[8])
    return NetCounters(rx_bytes=rx, tx_bytes=tx)


def parse_cpu_max(text: str) -> tuple[int | None, int | None]:
    """v2 cpu.max `QUOTA PERIOD` (QUOTA may be `max`)."""
    parts = text.split()
    if len(parts) != 2:
        raise CgroupParseError(f"bad cpu.max: {text!r}")
    return parse_int(parts[0]), int(parts[1])


def parse_proc_cgroup(text: str) -> dict[str, str]:
    """/proc/<pid>/cgroup → {controller: path}; the v2 unified line is keyed by ``""``."""
    result: dict[str, str] = {}
    for line in text.splitlines():
        parts = line.split(":", 2)
        if len(parts) != 3:
            continue
        _, controllers, path = parts
        if not controllers:
            result[""] = path
            continue
        for controller in controllers.split(","):
            result[controller] = path
    return result


@dataclass(frozen=True)
class CgroupMounts:
    v1: Mapping[str, PurePosixPath]          # controller → mount point
    unified: PurePosixPath | None            # cgroup2 mount point


def parse_mounts(text: str) -> CgroupMounts:
    v1: dict[str, PurePosixPath] = {}
    unified: PurePosixPath | None = None
    for line in text.splitlines():
        parts = line.split()
        # only cgroup lines make paths: /proc/mounts holds every container's overlay and
        # shm mounts, whose path parts a PurePosixPath would intern (a table that never shrinks)
        if len(parts) < 4 or parts[2] not in ("cgroup", "cgroup2"):
            continue
        mount_point = PurePosixPath(parts[1])
        if parts[2] == "cgroup2":
            unified = mount_point
        else:
            for option in parts[3].split(","):
                if option in V1_CONTROLLERS:
                    v1[option] = mount_point
    return CgroupMounts(v1=v1, unified=unified)


@dataclass(frozen=True)
class CgroupDirs:
    version: CgroupVersion
    dirs: Mapping[str, Path]     # v1: controller → dir; v2: {"": dir}

    def path_of(self, filename: str) -> Path | None:
        """Where `filename` lives; None when its controller is not mounted/joined."""
        controller = "" if self.version is CgroupVersion.V2 else V1_FILES[filename]
        base = self.dirs.get(controller)
        return base / filename if base is not None else None


def rebase(mount_point: PurePosixPath, cgroup_root: Path) -> Path:
    """Map a host mount point under /sys/fs/cgroup onto an injectable `cgroup_root`."""
    try:
        return cgroup_root / mount_point.relative_to(HOST_CGROUP_ROOT)
    except ValueError:
        return Path(mount_point)


def _join(base: Path, cgroup_path: str) -> Path:
    return base / cgroup_path.lstrip("/")


def locate(proc_cgroup: str, mounts: str, cgroup_root: Path) -> CgroupDirs:
    """The cgroup dirs of a process; v1 when its memory controller sits on a v1 hierarchy."""
    paths = parse_proc_cgroup(proc_cgroup)
    parsed = parse_mounts(mounts)
    if "memory" in paths and "memory" in parsed.v1:
        dirs = {c: _join(rebase(parsed.v1[c], cgroup_root), paths[c])
                for c in V1_CONTROLLERS if c in paths and c in parsed.v1}
        return CgroupDirs(CgroupVersion.V1, dirs)
    if "" in paths and parsed.unified is not None:
        return CgroupDirs(CgroupVersion.V2, {"": _join(rebase(parsed.unified, cgroup_root),
                                                        paths[""])})
    raise CgroupParseError("no memory controller in /proc/<pid>/cgroup and no cgroup2 mount")


def guess_docker_dirs(mounts: str, cgroup_root: Path, container_id: str) -> CgroupDirs:
    """Docker's cgroupfs-driver layout (`<mount>/docker/<id>`) when the process is unknown."""
    parsed = parse_mounts(mounts)
    if "memory" in parsed.v1:
        return CgroupDirs(CgroupVersion.V1, {
            c: rebase(m, cgroup_root) / "docker" / container_id for c, m in parsed.v1.items()})
    if parsed.unified is not None:
        return CgroupDirs(CgroupVersion.V2,
                          {"": rebase(parsed.unified, cgroup_root) / "docker" / container_id})
    raise CgroupParseError("no cgroup mounts found")


def _opt(files: Mapping[str, str | None], name: str) -> str | None:
    return files.get(name)


def _opt_int(files: Mapping[str, str | None], name: str) -> int | None:
    text = files.get(name)
    return parse_int(text) if text is not None else None


def _need(files: Mapping[str, str | None], name: str) -> str:
    text = files.get(name)
    if text is None:
        raise CgroupParseError(f"missing cgroup file {name}")
    return text


def cpu_v1(files: Mapping[str, str | None], clk_tck: int) -> CpuCounters:
    usage = parse_int(_need(files, "cpuacct.usage")) or 0
    ticks = parse_fields(_opt(files, "cpuacct.stat") or "", _V1_CPU_TICKS)
    quota = _opt_int(files, "cpu.cfs_quota_us")
    tick_ns = 1_000_000_000 // clk_tck
    return CpuCounters(
        usage_ns=usage,
        user_ns=ticks["user"] * tick_ns if "user" in ticks else None,
        system_ns=ticks["system"] * tick_ns if "system" in ticks else None,
        quota_us=quota if quota is not None and quota > 0 else None,
        period_us=_opt_int(files, "cpu.cfs_period_us"),
    )


def memory_v1(files: Mapping[str, str | None]) -> MemoryCounters:
    text = _opt(files, "memory.stat") or ""
    stat = parse_fields(text, _V1_MEMORY)
    if len(stat) < len(_V1_MEMORY):
        stat.update(parse_fields(text, _V1_MEMORY_FLAT))
    oom = parse_fields(_opt(files, "memory.oom_control") or "", _OOM_KILL)
    limit_text = _opt(files, "memory.limit_in_bytes")
    return MemoryCounters(
        usage=parse_int(_need(files, "memory.usage_in_bytes")) or 0,
        limit=parse_v1_limit(limit_text) if limit_text is not None else None,
        rss=stat.get("total_rss", stat.get("rss")),
        cache=stat.get("total_cache", stat.get("cache")),
        swap=stat.get("total_swap", stat.get("swap")),
        inactive_file=stat.get("total_inactive_file", stat.get("inactive_file", 0)),
        oom_kill=oom.get("oom_kill"),
    )


def _pids(files: Mapping[str, str | None]) -> PidsCounters | None:
    current = _opt_int(files, "pids.current")
    if current is None:
        return None
    return PidsCounters(current=current, limit=_opt_int(files, "pids.max"))


def sample_v1(files: Mapping[str, str | None], *, clk_tck: int, taken_at: float,
              net: NetCounters | None = None) -> ContainerSample:
    """Build a sample from the contents of the v1 files (keys: file names, None: absent)."""
    blkio = _opt(files, "blkio.throttle.io_service_bytes")
    return ContainerSample(
        taken_at=taken_at, cpu=cpu_v1(files, clk_tck), memory=memory_v1(files),
        io=parse_blkio_v1(blkio) if blkio is not None else IoCounters(),
        net=net or NetCounters(), pids=_pids(files),
    )


def cpu_v2(files: Mapping[str, str | None]) -> CpuCounters:
    stat = parse_fields(_need(files, "cpu.stat"), _V2_CPU)
    quota, period = parse_cpu_max(files["cpu.max"] or "") if files.get("cpu.max") else (None, None)
    return CpuCounters(
        usage_ns=stat.get("usage_usec", 0) * 1000,
        user_ns=stat["user_usec"] * 1000 if "user_usec" in stat else None,
        system_ns=stat["system_usec"] * 1000 if "system_usec" in stat else None,
        quota_us=quota, period_us=period,
    )


def memory_v2(files: Mapping[str, str | None]) -> MemoryCounters:
    stat = parse_fields(_opt(files, "memory.stat") or "", _V2_MEMORY)
    events = parse_fields(_opt(files, "memory.events") or "", _OOM_KILL)
    return MemoryCounters(
        usage=parse_int(_need(files, "memory.current")) or 0,
        limit=_opt_int(files, "memory.max"),
        rss=stat.get("anon"), cache=stat.get("file"),
        swap=_opt_int(files, "memory.swap.current"),
        inactive_file=stat.get("inactive_file", 0),
        oom_kill=events.get("oom_kill"),
    )


def sample_v2(files: Mapping[str, str | None], *, taken_at: float,
              net: NetCounters | None = None) -> ContainerSample:
    io = _opt(files, "io.stat")
    return ContainerSample(
        taken_at=taken_at, cpu=cpu_v2(files), memory=memory_v2(files),
        io=parse_io_stat_v2(io) if io is not None else IoCounters(),
        net=net or NetCounters(), pids=_pids(files),
    )
