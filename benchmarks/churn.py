"""Agent memory under kernel churn: N create → batch exec → destroy cycles on a real agent.

A real agent process (`berth start-server`, real Docker, CurveZMQ) is driven like a Manager by
`berth.client.AgentClient`: each cycle creates one busybox kernel (no runner in the image, so
the batch `execute` goes through the agent's docker-exec fallback), runs `true` in batch mode,
and destroys it. The agent's RSS is sampled every `--every` cycles, and once more after the
last kernel is gone and the agent sat idle (`--idle` seconds: a few stats passes).

Reported: RSS at each sample, and the growth per cycle after the warm-up (`--warmup` cycles,
which fill one-off caches and the bounded history of ended kernels) as the least-squares
slope of RSS over cycles, and as end-minus-warm-up divided by the cycles between. A leak of
4 KB per cycle (issue 11) shows as a slope of ~4096 B/cycle.

    .venv/bin/python benchmarks/churn.py --cycles 300
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

import bench_common as bc


def slope(points: list[tuple[int, int]]) -> float:
    """Least-squares slope of RSS (bytes) over cycle number."""
    n = len(points)
    if n < 2:
        return 0.0
    mx = sum(c for c, _ in points) / n
    my = sum(r for _, r in points) / n
    den = sum((c - mx) ** 2 for c, _ in points)
    return sum((c - mx) * (r - my) for c, r in points) / den if den else 0.0


async def cycle(agent: bc.AgentProcess) -> None:
    kid = bc.new_id()
    config = bc.kernel_config(bc.BUSYBOX_IMAGE, cpu="0.25", mem="64m")
    await agent.client.create_kernels(kid, [kid], [config], {})
    result = await agent.client.execute(kid, kid, 2, "run", "batch", "", {"exec": "true"})
    while result["status"] != "finished":
        result = await agent.client.execute(kid, kid, 2, "run", "continue", "", {})
    if result.get("exitCode") != 0:
        raise RuntimeError(f"batch exec failed: {result}")
    await agent.client.destroy_kernel(kid, kid, "user-requested")


async def main() -> None:
    p = bc.parser("agent RSS under kernel churn (create, batch exec, destroy)", 0)
    p.add_argument("--cycles", type=int, default=300)
    p.add_argument("--every", type=int, default=25, help="sample RSS every N cycles")
    p.add_argument("--warmup", type=int, default=50, help="cycles before growth is measured")
    p.add_argument("--idle", type=float, default=10.0, help="idle seconds before the last sample")
    args = p.parse_args()
    bc.require_images(bc.BUSYBOX_IMAGE)
    samples: list[dict[str, Any]] = []
    started = time.monotonic()
    async with bc.agent_process() as agent:
        def sample(at: int, note: str = "") -> None:
            samples.append({"cycle": at, "rss_bytes": agent.rss_bytes(),
                            "seconds": round(time.monotonic() - started, 1), "note": note})
            print(f"cycle {at:5d}  RSS {samples[-1]['rss_bytes'] / 2**20:8.2f} MiB  "
                  f"{samples[-1]['seconds']:7.1f} s {note}", flush=True)

        sample(0, "idle agent, before any kernel")
        for i in range(1, args.cycles + 1):
            await cycle(agent)
            if i % args.every == 0 or i == args.cycles:
                sample(i)
        await asyncio.sleep(args.idle)
        status = await agent.client.get_status()
        sample(args.cycles, f"after {args.idle:g} s idle, {len(status['kernels'])} kernels")
    measured = [(s["cycle"], s["rss_bytes"]) for s in samples[1:-1] if s["cycle"] >= args.warmup]
    first = min(measured)
    last = (args.cycles, samples[-1]["rss_bytes"])
    per_cycle = (last[1] - first[1]) / (last[0] - first[0]) if last[0] > first[0] else 0.0
    data = {
        "cycles": args.cycles, "warmup": args.warmup, "image": bc.BUSYBOX_IMAGE,
        "rss_start_bytes": samples[0]["rss_bytes"], "rss_end_idle_bytes": last[1],
        "growth_after_warmup_bytes": last[1] - first[1],
        "growth_per_cycle_bytes": round(per_cycle, 1),
        "slope_per_cycle_bytes": round(slope(measured), 1),
        "wall_seconds": round(time.monotonic() - started, 1),
        "samples": samples,
    }
    rows = [("RSS at start", f"{samples[0]['rss_bytes'] / 2**20:.1f} MiB", "", ""),
            (f"RSS at cycle {first[0]}", f"{first[1] / 2**20:.1f} MiB", "", ""),
            (f"RSS after {args.cycles} + idle", f"{last[1] / 2**20:.1f} MiB", "", ""),
            ("growth per cycle (end - warm-up)", f"{per_cycle:.0f} B", "", ""),
            ("slope per cycle (least squares)", f"{data['slope_per_cycle_bytes']:.0f} B", "", "")]
    bc.emit("churn", rows, data, args.out)
    if bc.sweep_containers():
        raise SystemExit("containers were left behind")


if __name__ == "__main__":
    asyncio.run(main())
