"""Block-I/O throttling for Docker's HostConfig from a kernel's `resource_opts`.

cgroup v1 gotcha (environment §9): `blkio.throttle.io_service_bytes` stays at 0 until a
throttle rule exists on the device, so with `always_count=True` a kernel without a configured
limit still gets a rule so high it never throttles, only to make the counters count.

A kernel with a loop-device scratch (`scratch-type = "hostfile"`) gets the same rules on its
loop device too: its `/home/work` I/O enters the block layer there, in its own task (so in its
blkio cgroup), and the loop worker re-issues it to the backing disk. With the loop device in
direct-I/O mode (storage.mounter) that re-issue carries the kernel's cgroup as well, so the
disk rule and the disk counters see it; the loop device's own counters are then a second
view of the same bytes and are left out of the sums (stats.cgroup, LOOP_MAJOR).
"""

from __future__ import annotations

import logging
import os
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from berth.errors import BerthError, InvalidArgument

log = logging.getLogger(__name__)

COUNTING_RATE = 1 << 40          # 1 TiB/s: never throttles, makes v1 counters count
LOOP_MAJOR = 7                   # block major of loop devices (Documentation/admin-guide/devices)
_SIZE = re.compile(r"^\s*(\d+)\s*([kmgt]?)(i?b)?\s*$", re.IGNORECASE)
_UNITS = {"": 1, "k": 1 << 10, "m": 1 << 20, "g": 1 << 30, "t": 1 << 40}


@dataclass(frozen=True)
class BlockDevice:
    name: str          # e.g. "vda"
    major: int
    minor: int

    @property
    def path(self) -> str:
        return f"/dev/{self.name}"


def parse_rate(value: object, *, field: str) -> int:
    """Bytes per second from an int or a size string ("10m", "1GiB"); binary units."""
    if isinstance(value, bool):
        raise InvalidArgument("not a byte rate", field=field, value=value)
    if isinstance(value, int) and value >= 0:
        return value
    match = _SIZE.match(str(value)) if isinstance(value, str) else None
    if match is None:
        raise InvalidArgument("not a byte rate", field=field, value=value)
    return int(match.group(1)) * _UNITS[match.group(2).lower()]


def _uevent(text: str) -> dict[str, str]:
    return dict(line.split("=", 1) for line in text.splitlines() if "=" in line)


def block_device_of(path: Path, *, sys_root: Path = Path("/sys")) -> BlockDevice:
    """The whole-disk block device holding `path` (throttle rules refuse partitions)."""
    st = os.stat(path)
    node = sys_root / "dev" / "block" / f"{os.major(st.st_dev)}:{os.minor(st.st_dev)}"
    if (node / "partition").exists():
        node = node.resolve().parent      # /sys/devices/.../vda/vda1 → .../vda
    info = _uevent((node / "uevent").read_text())
    if "DEVNAME" not in info:
        raise FileNotFoundError(f"no block device behind {path} ({node})")
    return BlockDevice(info["DEVNAME"], int(info["MAJOR"]), int(info["MINOR"]))


def blkio_host_config(resource_opts: Mapping[str, Any], *devices: BlockDevice,
                      always_count: bool = True) -> dict[str, list[dict[str, Any]]]:
    """`BlkioDeviceReadBps` / `BlkioDeviceWriteBps` entries for Docker's HostConfig: the same
    rate on each of `devices` (the disk under the data root, the kernel's scratch loop device)."""
    config: dict[str, list[dict[str, Any]]] = {}
    unique = list(dict.fromkeys(devices))
    for opt, key in (("io_read_bps", "BlkioDeviceReadBps"), ("io_write_bps", "BlkioDeviceWriteBps")):
        raw = resource_opts.get(opt)
        rate = parse_rate(raw, field=f"resource_opts.{opt}") if raw is not None else None
        if not rate and always_count:
            rate = COUNTING_RATE
        if rate and unique:
            config[key] = [{"Path": d.path, "Rate": rate} for d in unique]
    return config


@dataclass(frozen=True)
class BlkioLimits:
    """Block-I/O limits as a limit contributor (``berth.resources.LimitContributor``): a
    kernel's ``resource_opts`` ``io_read_bps`` / ``io_write_bps`` as a HostConfig fragment.

    Without a configured rate a kernel still gets a rule too high to throttle, since cgroup v1
    counts a container's I/O only under some rule. The rules go on `disk` (the disk under the
    engine's data root) and on the kernel's scratch loop device, found from `scratch_dir` (the
    kernel's directory of a hostfile scratch, by kernel id; None for other scratch types).
    """

    disk: BlockDevice | None
    scratch_dir: Callable[[str], Path] | None = None

    def docker_args(self, kernel_id: str, resource_opts: Mapping[str, Any]) -> dict[str, Any]:
        devices = [d for d in (self.disk, self._scratch_device(kernel_id)) if d]
        host = blkio_host_config(resource_opts, *devices)
        return {"HostConfig": host} if host else {}

    def _scratch_device(self, kernel_id: str) -> BlockDevice | None:
        """The loop device a hostfile scratch is mounted from (made before the container)."""
        if self.scratch_dir is None:
            return None
        try:
            device = block_device_of(self.scratch_dir(kernel_id))
        except (OSError, ValueError, BerthError) as exc:
            log.warning("no loop device behind the scratch of %s: /home/work is not "
                        "throttled (%s)", kernel_id, exc)
            return None
        return device if device.major == LOOP_MAJOR else None
