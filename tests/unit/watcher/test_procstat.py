"""The watcher's /proc reader on fixture text: state, RSS, CPU seconds and the CPU share."""

from __future__ import annotations

from pathlib import Path

from berth.watcher.procstat import ProcessSampler, parse_stat, parse_status_rss

STAT = ("4242 (berth (agent) x) S 1 4242 4242 0 -1 4194560 5000 0 0 0 {utime} {stime} 0 0 20 0 "
        "7 0 1234 456789012 30000 18446744073709551615 1 1 0 0 0 0 0 0 0 0 0 0 17 1 0 0 0 0 0")
STATUS = "Name:\tpython\nState:\tS (sleeping)\nVmRSS:\t  51200 kB\nThreads:\t7\n"


def proc_tree(root: Path, pid: int, utime: int, stime: int) -> None:
    d = root / str(pid)
    d.mkdir(parents=True, exist_ok=True)
    (d / "stat").write_text(STAT.format(utime=utime, stime=stime))
    (d / "status").write_text(STATUS)


def test_parsers() -> None:
    state, cpu, threads = parse_stat(STAT.format(utime=150, stime=50), clk_tck=100)
    assert (state, cpu, threads) == ("sleeping", 2.0, 7)
    assert parse_status_rss(STATUS) == 51200 * 1024
    assert parse_status_rss("Name:\tkthreadd\n") == 0


def test_report_computes_cpu_share_between_readings(tmp_path: Path) -> None:
    now = [100.0]
    sampler = ProcessSampler(tmp_path, clk_tck=100, clock=lambda: now[0])
    proc_tree(tmp_path, 4242, utime=100, stime=0)
    first = sampler.report(4242)
    assert first == {"pid": 4242, "state": "sleeping", "rss-bytes": 51200 * 1024,
                     "cpu-seconds": 1.0, "cpu-percent": None, "threads": 7}
    proc_tree(tmp_path, 4242, utime=150, stime=50)  # one more CPU second in two seconds
    now[0] = 102.0
    assert sampler.report(4242)["cpu-percent"] == 50.0
    assert sampler.report(4343) == {"pid": 4343, "state": "absent"}
    assert sampler.report(None) == {"pid": None, "state": "absent"}
