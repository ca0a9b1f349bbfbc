"""Parsers and the reader on the checked-in v1 (captured on this host) and v2 trees."""

from __future__ import annotations

from pathlib import Path

import pytest

from berth.stats import CgroupReader, CgroupVersion, KernelTarget
from berth.stats import cgroup as cg
from berth.types import ContainerId, KernelId

FIXTURES = Path(__file__).resolve().parents[2] / "fixtures" / "cgroup"


def _reader(tree: str) -> tuple[CgroupReader, str]:
    root = FIXTURES / tree
    reader = CgroupReader(cgroup_root=root / "sys/fs/cgroup", proc_root=root / "proc",
                          clk_tck=100, clock=lambda: 42.0)
    return reader, (root / "CONTAINER_ID").read_text().strip()


def _target(cid: str, pid: int) -> KernelTarget:
    return KernelTarget(KernelId("k"), ContainerId(cid), pid)


def test_v1_locate_uses_separate_cpu_and_cpuacct_mounts() -> None:
    reader, cid = _reader("v1")
    dirs = reader.locate(cid, 4242)
    root = FIXTURES / "v1/sys/fs/cgroup"
    assert dirs.version is CgroupVersion.V1
    assert dirs.dirs["cpu"] == root / "cpu/docker" / cid
    assert dirs.dirs["cpuacct"] == root / "cpuacct/docker" / cid
    assert set(dirs.dirs) == {"cpu", "cpuacct", "memory", "blkio", "pids"}


def test_v1_sample_values() -> None:
    reader, cid = _reader("v1")
    s = reader.read(_target(cid, 4242))
    assert s.taken_at == 42.0
    assert s.cpu.usage_ns == 6703146827
    assert (s.cpu.user_ns, s.cpu.system_ns) == (6_590_000_000, 110_000_000)
    assert (s.cpu.quota_us, s.cpu.period_us, s.cpu.nr_throttled) == (150000, 100000, 0)
    m = s.memory
    assert (m.usage, m.limit, m.rss, m.cache, m.swap) == (966656, 268435456, 167936, 167936, 0)
    assert (m.inactive_file, m.failcnt, m.oom_kill, m.under_oom) == (32768, 7, 1, False)
    assert m.working_set == 966656 - 32768
    # 7:0 (a loop device) is left out: its I/O reaches the disk again, counted there
    assert (s.io.read_bytes, s.io.write_bytes) == (52428800, 41951232)
    assert (s.net.rx_bytes, s.net.tx_bytes) == (1490, 378)  # eth0 only, lo excluded
    assert s.pids is not None and (s.pids.current, s.pids.limit) == (3, 512)


def test_v2_locate_and_sample() -> None:
    reader, cid = _reader("v2")
    dirs = reader.locate(cid, 777)
    assert dirs.version is CgroupVersion.V2
    assert dirs.dirs[""].name == f"docker-{cid}.scope"
    s = reader.read(_target(cid, 777))
    assert (s.cpu.usage_ns, s.cpu.user_ns, s.cpu.system_ns) == (8123456000, 6e9, 2123456000)
    assert (s.cpu.quota_us, s.cpu.period_us, s.cpu.throttled_ns) == (200000, 100000, 345678000)
    m = s.memory
    assert (m.usage, m.limit, m.rss, m.cache, m.swap) == (104857600, 536870912, 73400320,
                                                         29360128, 4096)
    assert (m.inactive_file, m.oom_kill, m.failcnt) == (20971520, 2, 5)
    assert (s.io.read_bytes, s.io.write_bytes) == (1048576 + 4096, 2097152)
    assert (s.net.rx_bytes, s.net.tx_bytes) == (9876543 + 1000, 123456 + 500)
    assert s.pids is not None and (s.pids.current, s.pids.limit) == (9, 1024)


def test_oom_kill_count_v1_v2() -> None:
    for tree, pid, expected in (("v1", 4242, 1), ("v2", 777, 2)):
        reader, cid = _reader(tree)
        assert reader.oom_kill_count(cid, pid) == expected


def test_unknown_pid_falls_back_to_docker_layout() -> None:
    reader, cid = _reader("v1")
    dirs = reader.locate(cid, 0)
    assert dirs.dirs["memory"] == FIXTURES / "v1/sys/fs/cgroup/memory/docker" / cid
    assert reader.read(_target(cid, 0)).memory.usage == 966656


def test_missing_cgroup_is_an_error_and_oom_count_none(tmp_path: Path) -> None:
    (tmp_path / "proc").mkdir()
    (tmp_path / "proc/mounts").write_text((FIXTURES / "v1/proc/mounts").read_text())
    reader = CgroupReader(cgroup_root=tmp_path / "cg", proc_root=tmp_path / "proc")
    with pytest.raises(cg.CgroupParseError):
        reader.read(_target("deadbeef", 0))
    assert reader.oom_kill_count("deadbeef") is None


def test_v1_unlimited_and_v2_max() -> None:
    assert cg.parse_v1_limit("9223372036854771712\n") is None
    assert cg.parse_v1_limit("1048576") == 1048576
    assert cg.parse_int("max\n") is None
    assert cg.parse_cpu_max("max 100000") == (None, 100000)
    with pytest.raises(cg.CgroupParseError):
        cg.parse_int("garbage")


def test_cpu_v1_no_quota() -> None:
    cpu = cg.cpu_v1({"cpuacct.usage": "10", "cpu.cfs_quota_us": "-1"}, clk_tck=100)
    assert cpu.quota_us is None and cpu.user_ns is None


def test_combined_cpu_cpuacct_mount(tmp_path: Path) -> None:
    mounts = "cgroup /sys/fs/cgroup/cpu,cpuacct cgroup rw,cpu,cpuacct 0 0\n" \
             "cgroup /sys/fs/cgroup/memory cgroup rw,memory 0 0\n"
    own = "3:cpu,cpuacct:/docker/abc\n2:memory:/docker/abc\n0::/\n"
    dirs = cg.locate(own, mounts, tmp_path)
    assert dirs.dirs["cpu"] == dirs.dirs["cpuacct"] == tmp_path / "cpu,cpuacct/docker/abc"
    assert dirs.path_of("pids.current") is None


def test_net_dev_rejects_short_lines() -> None:
    with pytest.raises(cg.CgroupParseError):
        cg.parse_net_dev("h1\nh2\n eth0: 1 2 3\n")
