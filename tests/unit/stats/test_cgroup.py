"""Parsers and the reader on the checked-in v1 (captured on this host) and v2 trees."""

from __future__ import annotations

import os
import shutil
import threading
from pathlib import Path
from unittest import mock

import pytest

from berth.stats import CgroupReader, CgroupVersion, KernelTarget, cgroupfs
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
    assert (s.cpu.quota_us, s.cpu.period_us) == (150000, 100000)
    m = s.memory
    assert (m.usage, m.limit, m.rss, m.cache, m.swap) == (966656, 268435456, 167936, 167936, 0)
    assert (m.inactive_file, m.oom_kill) == (32768, 1)
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
    assert (s.cpu.quota_us, s.cpu.period_us) == (200000, 100000)
    m = s.memory
    assert (m.usage, m.limit, m.rss, m.cache, m.swap) == (104857600, 536870912, 73400320,
                                                         29360128, 4096)
    assert (m.inactive_file, m.oom_kill) == (20971520, 2)
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


def _copy_tree(tree: str, dest: Path) -> tuple[CgroupReader, str]:
    shutil.copytree(FIXTURES / tree, dest, symlinks=True)
    reader = CgroupReader(cgroup_root=dest / "sys/fs/cgroup", proc_root=dest / "proc",
                          clk_tck=100, clock=lambda: 42.0)
    return reader, (dest / "CONTAINER_ID").read_text().strip()


def test_held_files_are_read_afresh_and_only_exported_files_are_opened(tmp_path: Path) -> None:
    reader, cid = _copy_tree("v1", tmp_path / "v1")
    assert reader.read(_target(cid, 4242)).memory.usage == 966656
    # 11 cgroup files (no cpu.stat, no memory.failcnt: nothing exports them) + net/dev, less
    # the 4 limit files (quota, period, memory limit, pids.max), read by path now and then
    assert reader.open_fds == len(cg.V1_FILES) + 1 - 4 == 8
    usage = tmp_path / "v1/sys/fs/cgroup/memory/docker" / cid / "memory.usage_in_bytes"
    usage.write_text("123456\n")   # same inode: the held descriptor sees the new value
    assert reader.read(_target(cid, 4242)).memory.usage == 123456
    assert reader.open_fds == 8
    reader.retain(set())
    assert reader.open_fds == 0


def test_limits_are_read_again_every_few_reads(tmp_path: Path) -> None:
    reader, cid = _copy_tree("v1", tmp_path / "v1")
    target = _target(cid, 4242)
    first = reader.read(target).memory.limit
    limit = tmp_path / "v1/sys/fs/cgroup/memory/docker" / cid / "memory.limit_in_bytes"
    limit.write_text("52428800\n")     # a live update (docker update --memory 50m)
    seen = [reader.read(target).memory.limit for _ in range(cgroupfs._LIMITS_EVERY)]
    assert seen[:-1] == [first] * (cgroupfs._LIMITS_EVERY - 1) and first != 52428800
    assert seen[-1] == 52428800


def test_over_the_descriptor_budget_files_are_opened_per_read(tmp_path: Path) -> None:
    root = tmp_path / "v2"
    shutil.copytree(FIXTURES / "v2", root, symlinks=True)
    reader = CgroupReader(cgroup_root=root / "sys/fs/cgroup", proc_root=root / "proc",
                          fd_budget=lambda: 5)
    cid = (root / "CONTAINER_ID").read_text().strip()
    assert reader.read(_target(cid, 777)).pids is not None
    assert reader.open_fds == 0


def test_a_retired_handle_closes_when_its_read_ends(tmp_path: Path) -> None:
    """Forgetting a container while a (stuck) read holds its descriptors must not close them
    under the read: the read closes them when it ends."""
    reader, cid = _copy_tree("v1", tmp_path / "v1")
    target = _target(cid, 4242)
    reader.read(target)
    entered, release = threading.Event(), threading.Event()
    real_preadv = os.preadv

    def slow_preadv(fd: int, buffers: list[bytearray], offset: int) -> int:
        entered.set()
        release.wait(5)
        return real_preadv(fd, buffers, offset)

    with mock.patch("berth.stats.cgroupfs.os.preadv", slow_preadv):
        thread = threading.Thread(target=reader.read, args=(target,))
        thread.start()
        assert entered.wait(5)
        reader.forget(cid)
        assert reader.open_fds == 8         # still held by the read in progress
        release.set()
        thread.join(5)
    assert reader.open_fds == 0


def test_a_vanished_cgroup_is_reopened_next_time(tmp_path: Path) -> None:
    reader, cid = _copy_tree("v1", tmp_path / "v1")
    memory = tmp_path / "v1/sys/fs/cgroup/memory/docker" / cid
    saved = tmp_path / "saved"
    shutil.move(memory, saved)
    with pytest.raises(cg.CgroupParseError):
        reader.read(_target(cid, 4242))
    assert reader.open_fds == 0
    shutil.move(saved, memory)
    assert reader.read(_target(cid, 4242)).memory.usage == 966656


@pytest.mark.parametrize("tree", ["v1", "v2"])
def test_parse_fields_agrees_with_parse_keyed(tree: str) -> None:
    for path in (FIXTURES / tree / "sys/fs/cgroup").rglob("*"):
        if path.is_file() and path.name.endswith((".stat", "oom_control", ".events")):
            text = path.read_text()
            keyed = cg.parse_keyed(text)
            keys = (*keyed, "rss", "file", "absent")
            assert cg.parse_fields(text, keys) == keyed, path


def test_a_held_file_larger_than_the_buffer_is_read_whole(tmp_path: Path) -> None:
    reader, cid = _copy_tree("v1", tmp_path / "v1")
    target = _target(cid, 4242)
    reader.read(target)  # held from here on
    stat = tmp_path / "v1/sys/fs/cgroup/memory/docker" / cid / "memory.stat"
    padding = "".join(f"pad_{n} {n}\n" for n in range(1200))  # ~14 KB before the totals
    with stat.open("r+") as f:  # same inode: the held descriptor reads it
        text = f.read()
        f.seek(0)
        f.write(padding + text.replace("\ntotal_rss ", "\ntotal_rss 7"))
    assert len(stat.read_bytes()) > cgroupfs._CHUNK
    assert str(reader.read(target).memory.rss).startswith("7")
    assert reader.read(target).memory == cg.memory_v1({
        "memory.stat": stat.read_text(),
        "memory.usage_in_bytes": (stat.parent / "memory.usage_in_bytes").read_text(),
        "memory.limit_in_bytes": (stat.parent / "memory.limit_in_bytes").read_text(),
        "memory.oom_control": (stat.parent / "memory.oom_control").read_text()})
