"""The table of performance targets, filled from the last run of each benchmark.

Reads ``benchmarks/results/*.json`` (written by the scripts beside this one) and prints a
Markdown table: each measure, Berth's figure, its baseline in the same run, the ratio (median
and p95 where the script keeps both), the target and whether the last run met it. A measure
whose result file is missing is printed as "not run", never guessed.

    .venv/bin/python benchmarks/report.py            # print the table
    .venv/bin/python benchmarks/report.py --check    # exit 1 when a target was missed
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

RESULTS = Path(__file__).resolve().parent / "results"


@dataclass(frozen=True)
class Row:
    measure: str
    berth: str
    baseline: str
    ratio: str
    target: str
    met: bool | None  # None: not measured
    when: str


def _load(name: str) -> dict[str, Any] | None:
    path = RESULTS / f"{name}.json"
    return json.loads(path.read_text()) if path.is_file() else None


def _ms(value: float) -> str:
    return f"{value:,.1f} ms" if value < 100 else f"{value:,.0f} ms"


def _ratio(median: float, p95: float | None = None) -> str:
    return f"{median:.2f}×" + (f" (p95 {p95:.2f}×)" if p95 is not None else "")


def _missing(measure: str, target: str) -> Row:
    return Row(measure, "not run", "—", "—", target, None, "—")


def create_exec(d: dict[str, Any]) -> Row:
    s = d["sequential"]["create_exec"]
    r = s["ratio"]
    return Row("create → first execute done vs `docker run -d --init` + first `docker exec`",
               f"{_ms(s['berth']['median_ms'])} (p95 {_ms(s['berth']['p95_ms'])})",
               f"{_ms(s['docker']['median_ms'])} (p95 {_ms(s['docker']['p95_ms'])})",
               _ratio(r["median"], r["p95"]), "≤ 1.10× median and p95",
               r["median"] <= 1.10 and r["p95"] <= 1.10, d["when"])


def concurrent16(d: dict[str, Any]) -> Row:
    c = d["concurrent"].get("16")
    if c is None:
        return _missing("16 concurrent creates, all ready, vs 16 parallel raw", "≤ 1.2×")
    a, r = c["all_ready"], c["all_ready"]["ratio"]
    return Row("16 concurrent creates, all ready (each executed once), vs 16 parallel raw",
               _ms(a["berth"]["median_ms"]), _ms(a["docker"]["median_ms"]),
               _ratio(r["median"], r["p95"]), "≤ 1.2×", r["median"] <= 1.2, d["when"])


def warm_pool(d: dict[str, Any]) -> Row:
    c = d["create"]
    return Row(f"warm-pool create vs `docker run -d` ({d['pool_hits']} of "
               f"{d['pool_hits'] + d['pool_misses']} served by the pool)",
               f"{_ms(c['berth_warm']['median_ms'])} (p95 {_ms(c['berth_warm']['p95_ms'])})",
               f"{_ms(c['docker_run']['median_ms'])} (p95 {_ms(c['docker_run']['p95_ms'])})",
               _ratio(c["ratio_median"], c["ratio_p95"]), "≤ 0.3×",
               c["ratio_median"] <= 0.3, d["when"])


def destroy(d: dict[str, Any]) -> Row:
    s = d["sequential"]
    berth, plain = s["berth"]["median_ms"], s["docker"]["median_ms"]
    port = s.get("docker_port", {}).get("median_ms")
    like = f"; {berth / port:.2f}× `rm -f` of a container with the same published port" \
        if port else ""
    return Row("destroy vs `docker rm -f`", _ms(berth), _ms(plain),
               _ratio(berth / plain) + like, "≤ 1.2×", berth / plain <= 1.2, d["when"])


def rpc(d: dict[str, Any]) -> Row:
    rt = d["round_trip"]
    ratio = rt["berth"]["median_ms"] / rt["raw"]["median_ms"]
    server = rt.get("berth_server", {}).get("median_ms")
    extra = f"; server alone {server / rt['raw']['median_ms']:.2f}×" if server else ""
    return Row("RPC round trip (`ping`, Berth's client) vs raw Curve echo (pyzmq)",
               f"{rt['berth']['median_ms']:.2f} ms", f"{rt['raw']['median_ms']:.2f} ms",
               _ratio(ratio) + extra, "≤ 1.5×", ratio <= 1.5, d["when"])


def stats(d: dict[str, Any]) -> Row:
    c = d["cycle"]
    return Row(f"one stats cycle over {d['containers']} containers vs Docker's stats API "
               "(one-shot, all concurrent)",
               f"{_ms(c['berth']['median_ms'])} (CPU {_ms(d['berth_cycle_cpu']['median_ms'])})",
               _ms(c["docker_one_shot"]["median_ms"]),
               f"1/{1 / d['ratio_one_shot']:.0f}", "≤ 1/50",
               d["ratio_one_shot"] <= 0.02, d["when"])


def _level(d: dict[str, Any], kernels: int) -> dict[str, Any] | None:
    return next((lv for lv in d["levels"] if lv["kernels"] == kernels), None)


def scale_kernels(d: dict[str, Any]) -> Row:
    top = max(d["levels"], key=lambda lv: lv["kernels"])
    ping = top["ping"]
    return Row(f"idle kernels (`{d['image']}`, cpu-overcommit-ratio {d['cpu_overcommit_ratio']})"
               " with the agent healthy",
               f"{top['kernels']}: ping {ping['median_ms']:.1f} ms (p95 {ping['p95_ms']:.1f}), "
               f"create {_ms(top['create_destroy_one_more']['create_median_ms'])}",
               "—", "—", "≥ 500, ping < 100 ms",
               top["kernels"] >= 500 and ping["p95_ms"] < 100, d["when"])


def scale_rss(d: dict[str, Any]) -> Row:
    lv = _level(d, 500)
    if lv is None:
        return _missing("agent RSS at 500 idle kernels", "≤ 110 MiB")
    base = _level(d, 0)
    idle = lv.get("rss_mib_before_scrape", lv["rss_mib"])  # a /metrics scrape is a peak of its own
    return Row("agent RSS at 500 idle kernels (after a /metrics scrape)",
               f"{idle:.0f} MiB ({lv['rss_mib']:.0f} MiB)",
               f"{base['rss_mib']:.0f} MiB at 0" if base else "—", "—", "≤ 110 MiB",
               idle <= 110, d["when"])


ROWS: list[tuple[str, Callable[[dict[str, Any]], Row], str, str]] = [
    ("kernel_start", create_exec, "create → first execute", "≤ 1.10× median and p95"),
    ("kernel_start", concurrent16, "16 concurrent creates", "≤ 1.2×"),
    ("warm_pool", warm_pool, "warm-pool create", "≤ 0.3×"),
    ("destroy", destroy, "destroy", "≤ 1.2×"),
    ("rpc", rpc, "RPC round trip", "≤ 1.5×"),
    ("stats_cycle", stats, "stats cycle", "≤ 1/50"),
    ("scale", scale_kernels, "idle kernels", "≥ 500"),
    ("scale", scale_rss, "agent RSS at 500 idle kernels", "≤ 110 MiB"),
]


def rows() -> list[Row]:
    out = []
    for name, build, measure, target in ROWS:
        data = _load(name)
        out.append(_missing(measure, target) if data is None else build(data))
    return out


def markdown(table: list[Row]) -> str:
    lines = ["| measure | Berth | baseline (same run) | ratio | target | met | run |",
             "|---|---|---|---|---|---|---|"]
    for r in table:
        met = "—" if r.met is None else ("yes" if r.met else "**no**")
        lines.append(f"| {r.measure} | {r.berth} | {r.baseline} | {r.ratio} | {r.target} | "
                     f"{met} | {r.when[:16].replace('T', ' ')} |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="exit 1 when a target was missed")
    args = parser.parse_args()
    table = rows()
    print(markdown(table))
    if args.check and any(r.met is False for r in table):
        sys.exit(1)


if __name__ == "__main__":
    main()
