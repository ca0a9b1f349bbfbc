"""The cgroupfs edge: locate a container's cgroup dirs and read its counters (blocking I/O).

Every root is injectable so the same code reads the checked-in fixture trees in tests.
Calls block on the filesystem; the collector runs them in worker threads with a timeout.
"""

from __future__ import annotations

import logging
import os
import time
from collections import OrderedDict
from collections.abc import Callable, Collection
from pathlib import Path

from berth.stats import cgroup
from berth.stats.models import CgroupVersion, ContainerSample, KernelTarget, NetCounters

log = logging.getLogger(__name__)


def _read(path: Path | None) -> str | None:
    if path is None:
        return None
    try:
        return path.read_text()
    except (FileNotFoundError, ProcessLookupError):
        return None


class CgroupReader:
    """Reads `ContainerSample`s for containers from cgroupfs and their netns's /proc net/dev."""

    def __init__(
        self,
        *,
        cgroup_root: Path = Path("/sys/fs/cgroup"),
        proc_root: Path = Path("/proc"),
        clk_tck: int | None = None,
        clock: Callable[[], float] = time.monotonic,
        net_exclude: frozenset[str] = frozenset({"lo"}),
        cache_size: int = 2048,
    ) -> None:
        self._cgroup_root = cgroup_root
        self._proc_root = proc_root
        self._clk_tck = clk_tck or os.sysconf("SC_CLK_TCK")
        self._clock = clock
        self._net_exclude = net_exclude
        self._cache: OrderedDict[tuple[str, int], cgroup.CgroupDirs] = OrderedDict()
        self._cache_size = cache_size

    def locate(self, container_id: str, pid: int) -> cgroup.CgroupDirs:
        """The container's cgroup dirs: from /proc/<pid>/cgroup, else Docker's default layout."""
        key = (container_id, pid)
        if key in self._cache:
            self._cache.move_to_end(key)
            return self._cache[key]
        mounts = _read(self._proc_root / "mounts") or ""
        own = _read(self._proc_root / str(pid) / "cgroup") if pid > 0 else None
        if own is not None:
            dirs = cgroup.locate(own, mounts, self._cgroup_root)
        else:
            dirs = cgroup.guess_docker_dirs(mounts, self._cgroup_root, container_id)
        self._cache[key] = dirs
        if len(self._cache) > self._cache_size:
            self._cache.popitem(last=False)
        return dirs

    def forget(self, container_id: str) -> None:
        for key in [k for k in self._cache if k[0] == container_id]:
            del self._cache[key]

    def retain(self, container_ids: Collection[str]) -> None:
        """Forget every container not in ``container_ids`` (those of the live kernels)."""
        for key in [k for k in self._cache if k[0] not in container_ids]:
            del self._cache[key]

    def read_net(self, pid: int) -> NetCounters:
        text = _read(self._proc_root / str(pid) / "net" / "dev") if pid > 0 else None
        if text is None:
            return NetCounters()
        return cgroup.parse_net_dev(text, self._net_exclude)

    def read(self, target: KernelTarget) -> ContainerSample:
        dirs = self.locate(target.container_id, target.pid)
        names = cgroup.V2_FILES if dirs.version is CgroupVersion.V2 else tuple(cgroup.V1_FILES)
        files = {name: _read(dirs.path_of(name)) for name in names}
        net = self.read_net(target.pid)
        at = self._clock()
        if dirs.version is CgroupVersion.V2:
            return cgroup.sample_v2(files, taken_at=at, net=net)
        return cgroup.sample_v1(files, clk_tck=self._clk_tck, taken_at=at, net=net)

    def read_pids(self, target: KernelTarget) -> list[int]:
        """Host PIDs of the processes in the container's cgroup (`docker exec`ed ones too)."""
        dirs = self.locate(target.container_id, target.pid)
        v2 = dirs.version is CgroupVersion.V2
        base = dirs.dirs.get("") if v2 else dirs.dirs.get("pids") or dirs.dirs.get("memory")
        text = _read(base / "cgroup.procs" if base is not None else None)
        return sorted({int(line) for line in (text or "").split() if line.isdigit()})

    def oom_kill_count(self, container_id: str, pid: int = 0) -> int | None:
        """The memory cgroup's oom_kill counter now; None when the cgroup is gone or silent."""
        dirs = self.locate(container_id, pid)
        if dirs.version is CgroupVersion.V2:
            text = _read(dirs.path_of("memory.events"))
        else:
            text = _read(dirs.path_of("memory.oom_control"))
        if text is None:
            return None
        return cgroup.parse_keyed(text).get("oom_kill")
