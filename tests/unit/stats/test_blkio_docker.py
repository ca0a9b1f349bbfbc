from __future__ import annotations

import os
from pathlib import Path

import pytest

from berth.errors import InvalidArgument
from berth.stats import (
    BlockDevice,
    blkio_host_config,
    block_device_of,
    parse_rate,
    sample_from_docker_stats,
)
from berth.stats.blkio import COUNTING_RATE

DEV = BlockDevice("vda", 254, 0)


def test_rates_from_resource_opts() -> None:
    cfg = blkio_host_config({"io_read_bps": "10m", "io_write_bps": 4096}, DEV)
    assert cfg == {"BlkioDeviceReadBps": [{"Path": "/dev/vda", "Rate": 10 << 20}],
                   "BlkioDeviceWriteBps": [{"Path": "/dev/vda", "Rate": 4096}]}


def test_always_count_sets_a_huge_rule_and_can_be_off() -> None:
    cfg = blkio_host_config({}, DEV)
    assert cfg["BlkioDeviceReadBps"][0]["Rate"] == COUNTING_RATE
    assert blkio_host_config({}, DEV, always_count=False) == {}


@pytest.mark.parametrize("bad", ["fast", -1, True, "1x"])
def test_bad_rate(bad: object) -> None:
    with pytest.raises(InvalidArgument):
        parse_rate(bad, field="io_read_bps")
    assert parse_rate("1GiB", field="x") == 1 << 30


def _fake_sys(tmp_path: Path, partition: bool) -> Path:
    st = os.stat(tmp_path)
    disk = tmp_path / "sys/devices/virtual/block/xda"
    disk.mkdir(parents=True)
    (disk / "uevent").write_text("MAJOR=9\nMINOR=0\nDEVNAME=xda\nDEVTYPE=disk\n")
    node = disk
    if partition:
        node = disk / "xda1"
        node.mkdir()
        (node / "partition").write_text("1\n")
        (node / "uevent").write_text("MAJOR=9\nMINOR=1\nDEVNAME=xda1\nDEVTYPE=partition\n")
    links = tmp_path / "sys/dev/block"
    links.mkdir(parents=True)
    (links / f"{os.major(st.st_dev)}:{os.minor(st.st_dev)}").symlink_to(node)
    return tmp_path / "sys"


@pytest.mark.parametrize("partition", [False, True])
def test_block_device_of_resolves_whole_disk(tmp_path: Path, partition: bool) -> None:
    sys_root = _fake_sys(tmp_path, partition)
    assert block_device_of(tmp_path, sys_root=sys_root) == BlockDevice("xda", 9, 0)


def test_docker_stats_document() -> None:
    doc = {
        "cpu_stats": {"cpu_usage": {"total_usage": 5_000, "usage_in_usermode": 3_000,
                                    "usage_in_kernelmode": 2_000}},
        "memory_stats": {"usage": 4096, "limit": 8192,
                         "stats": {"total_rss": 1024, "total_cache": 2048,
                                   "total_inactive_file": 512}},
        "blkio_stats": {"io_service_bytes_recursive": [
            {"major": 254, "minor": 0, "op": "Read", "value": 10},
            {"major": 254, "minor": 0, "op": "Write", "value": 20},
            {"major": 254, "minor": 0, "op": "Total", "value": 30}]},
        "networks": {"eth0": {"rx_bytes": 100, "tx_bytes": 50},
                     "eth1": {"rx_bytes": 1, "tx_bytes": 2}},
        "pids_stats": {"current": 3, "limit": 100},
    }
    s = sample_from_docker_stats(doc, taken_at=5.0)
    assert (s.cpu.usage_ns, s.cpu.user_ns, s.cpu.system_ns) == (5000, 3000, 2000)
    assert (s.memory.usage, s.memory.limit, s.memory.working_set) == (4096, 8192, 3584)
    assert (s.io.read_bytes, s.io.write_bytes) == (10, 20)
    assert (s.net.rx_bytes, s.net.tx_bytes) == (101, 52)
    assert s.pids is not None and s.pids.current == 3
    assert s.source == "docker"
