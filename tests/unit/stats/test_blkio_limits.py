"""Block-I/O limits as a limit contributor (berth.stats.BlkioLimits)."""

from __future__ import annotations

from pathlib import Path

from berth.stats import BlkioLimits, BlockDevice
from berth.stats.blkio import COUNTING_RATE

DISK = BlockDevice("vda", 253, 0)


def test_rates_become_a_host_config_fragment_on_the_disk() -> None:
    got = BlkioLimits(DISK).docker_args("k1", {"io_write_bps": "4m"})
    assert got == {"HostConfig": {
        "BlkioDeviceReadBps": [{"Path": "/dev/vda", "Rate": COUNTING_RATE}],
        "BlkioDeviceWriteBps": [{"Path": "/dev/vda", "Rate": 4 << 20}]}}


def test_no_device_gives_an_empty_fragment() -> None:
    assert BlkioLimits(None).docker_args("k1", {"io_read_bps": "1m"}) == {}


def test_a_scratch_without_a_loop_device_adds_no_rule(tmp_path: Path) -> None:
    asked: list[str] = []

    def scratch_dir(kernel_id: str) -> Path:
        asked.append(kernel_id)
        return tmp_path  # a directory on an ordinary filesystem, not a loop device

    got = BlkioLimits(DISK, scratch_dir).docker_args("k1", {})
    assert asked == ["k1"]
    assert [r["Path"] for r in got["HostConfig"]["BlkioDeviceReadBps"]] == ["/dev/vda"]


def test_a_scratch_that_cannot_be_found_leaves_the_disk_rule(tmp_path: Path) -> None:
    got = BlkioLimits(DISK, lambda kid: tmp_path / "gone" / kid).docker_args("k1", {})
    assert [r["Path"] for r in got["HostConfig"]["BlkioDeviceWriteBps"]] == ["/dev/vda"]
