"""Per-process counters parsed from /proc (stat and io), without psutil."""

from __future__ import annotations

import os
from pathlib import Path

from berth.stats.process import ProcCounters, ProcReader, parse_proc_io, parse_proc_stat

# a command name with a space and a closing parenthesis; utime 120, stime 30, rss 2500 pages
STAT = ("4242 (evil) name) S 1 4242 4242 0 -1 4194560 2811 0 0 0 120 30 0 0 20 0 3 0 "
        "1420491 102400000 2500 18446744073709551615 1 1 0 0 0 0 0 0 0 0 0 0 17 1 0 0\n")
IO = ("rchar: 900\nwchar: 800\nsyscr: 9\nsyscw: 8\nread_bytes: 4096\nwrite_bytes: 8192\n"
      "cancelled_write_bytes: 0\n")


def test_stat_fields_count_from_the_last_parenthesis() -> None:
    assert parse_proc_stat(STAT) == (150, 2500)


def test_io_takes_storage_bytes_not_rchar() -> None:
    assert parse_proc_io(IO) == (4096, 8192)


def test_reader_on_a_fake_proc_tree(tmp_path: Path) -> None:
    (tmp_path / "4242").mkdir()
    (tmp_path / "4242" / "stat").write_text(STAT)
    (tmp_path / "4242" / "io").write_text(IO)
    read = ProcReader(tmp_path)
    assert read(4242) == ProcCounters(150, 2500 * os.sysconf("SC_PAGE_SIZE"), 4096, 8192)
    assert read(4243) is None  # gone


def test_reader_on_this_process() -> None:
    got = ProcReader()(os.getpid())
    assert got is not None and got.rss_bytes > 1 << 20 and got.cpu_ticks > 0
