"""Where a kernel create's time goes, for the create rows of `docs/benchmarks.md`.

Three measures, each printed and written to JSON (`benchmarks/results/create_breakdown.json`
unless `--out`):

- `timeline`: a real agent (`timed_agent.py`, CurveZMQ, real Docker) creates a kernel, runs
  its first `execute` and destroys it, `--runs` times, once with `cpu=1` and once with `cpu=2`
  (interleaved); medians of: the agent before `docker create`, `docker create`, `docker start`,
  the runner's start until its ready probe, the agent after it, and the first execute; and of
  the destroy: the agent before the engine's kill-and-remove request, that request, and the
  agent after it (runner, scratch, slots, ports, the reply).
- `engine-config`: `docker create` + `start`, and then the removal (`DELETE ?force=1`, what
  `rm -f` sends), through the engine API of a bare `--init` container and of variants that
  add each part of a kernel's HostConfig (CPU/memory/pids limits, a published port, five bind
  mounts, blkio counting rules, ulimits and log options), and all of them together;
  interleaved, medians.
- `publish16`: 16 parallel `docker run -d --init` + first `docker exec`, with and without
  `-p 127.0.0.1::8080` (what a kernel's declared service costs the engine at 16 at once).

    .venv/bin/python benchmarks/create_breakdown.py --runs 8
"""

from __future__ import annotations

import asyncio
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import aiodocker
import bench_common as bc

TIMED_AGENT = [sys.executable, str(Path(__file__).with_name("timed_agent.py"))]
STEPS = (  # (name, from mark, to mark) over one create's timeline
    ("agent before docker create", "RPC create >", "DockerBackend.create >"),
    ("docker create", "DockerBackend.create >", "DockerBackend.create <"),
    ("docker start", "DockerBackend.start >", "DockerBackend.start <"),
    ("runner start until ready", "DockerBackend.start <", "RunnerClient.probe_ready >"),
    ("agent after the runner answered", "RunnerClient.probe_ready >", "RPC create <"),
    ("first execute", "RPC create <", "RPC execute <"),
    ("create → first execute", "RPC create >", "RPC execute <"),
    ("destroy: agent before the engine", "RPC destroy >", "DockerBackend.kill_and_remove >"),
    ("destroy: engine kill and remove", "DockerBackend.kill_and_remove >",
     "DockerBackend.kill_and_remove <"),
    ("destroy: agent after the engine", "DockerBackend.kill_and_remove <", "RPC destroy <"),
    ("destroy", "RPC destroy >", "RPC destroy <"),
)


def _ms(values: list[float]) -> float:
    return round(statistics.median(values) * 1000, 1)


# ---------------------------------------------------------------- timeline
async def timeline(runs: int) -> dict[str, dict[str, float]]:
    path = Path(tempfile.mkstemp(prefix="berth-timeline-")[1])
    os.environ["BERTH_TIMELINE"] = str(path)
    marks: dict[str, list[dict[str, float]]] = {"1": [], "2": []}
    try:
        async with bc.agent_process(command=TIMED_AGENT) as agent:
            for i in range(runs):
                for cpu in ("1", "2") if i % 2 == 0 else ("2", "1"):
                    path.write_text("")  # noqa: ASYNC240 - between measures
                    own: dict[str, float] = {}
                    kid = bc.new_id()
                    own["RPC create >"] = time.time()
                    await agent.client.create_kernels(kid, [kid], [bc.kernel_config(cpu=cpu)], {})
                    own["RPC create <"] = time.time()
                    await agent.client.execute(kid, kid, 2, bc.new_id(), "query", "pass", {})
                    own["RPC execute <"] = time.time()
                    await asyncio.sleep(0.2)  # the create's aftermath settles, as in destroy.py
                    own["RPC destroy >"] = time.time()
                    await agent.client.destroy_kernel(kid, kid)
                    own["RPC destroy <"] = time.time()
                    seen: dict[str, float] = {}
                    for line in path.read_text().splitlines():  # noqa: ASYNC240 - between measures
                        at, name = line.split(" ", 1)
                        seen.setdefault(name, float(at))  # the first of each (one create)
                    marks[cpu].append({**seen, **own})
                    await asyncio.sleep(0.3)
    finally:
        path.unlink(missing_ok=True)  # noqa: ASYNC240 - between measures
    return {f"cpu={cpu}": {name: _ms([m[b] - m[a] for m in ms]) for name, a, b in STEPS}
            for cpu, ms in marks.items()}


# ---------------------------------------------------------------- engine config
def _variants(mounts: Path) -> dict[str, dict[str, Any]]:
    base: dict[str, Any] = {"Image": bc.PYTHON_IMAGE, "Cmd": ["sleep", "infinity"],
                            "Labels": dict([bc.TEST_LABEL.split("="), bc.BENCH_LABEL.split("=")]),
                            "HostConfig": {"Init": True}}
    parts: dict[str, dict[str, Any]] = {
        "limits": {"CpusetCpus": "0", "CpuPeriod": 100000, "CpuQuota": 100000,
                   "Memory": 256 << 20, "MemorySwap": 256 << 20, "PidsLimit": 4096,
                   "ShmSize": 64 << 20},
        "port": {"PortBindings": {"8080/tcp": [{"HostIp": "127.0.0.1", "HostPort": ""}]}},
        "5 binds": {"Binds": [f"{mounts / str(i)}:/mnt/m{i}" for i in range(5)]},
        "blkio": {"BlkioDeviceReadBps": [], "BlkioDeviceWriteBps": []},
        "ulimits, log": {"Ulimits": [{"Name": "nofile", "Soft": 20000, "Hard": 20000}],
                         "LogConfig": {"Type": "json-file",
                                       "Config": {"max-size": "10m", "max-file": "2"}}},
    }
    device = _root_device()
    if device:  # the counting rule cgroup v1 needs, as a kernel gets it
        rule = [{"Path": device, "Rate": 1 << 40}]
        parts["blkio"] = {"BlkioDeviceReadBps": rule, "BlkioDeviceWriteBps": rule}
    out = {"bare --init": base}
    for name, extra in parts.items():
        out[f"+{name}"] = {**base, "HostConfig": {**base["HostConfig"], **extra}}
    everything = {k: v for extra in parts.values() for k, v in extra.items()}
    out["all of them"] = {**base, "HostConfig": {**base["HostConfig"], **everything}}
    for config in out.values():
        if "PortBindings" in config["HostConfig"]:
            config["ExposedPorts"] = {"8080/tcp": {}}
    return out


def _root_device() -> str | None:
    """The block device under / (`/dev/vda` here), for the blkio rule; None when unknown."""
    dev = os.stat("/").st_dev
    path = f"/sys/dev/block/{os.major(dev)}:{os.minor(dev)}/uevent"
    try:
        name = dict(line.split("=", 1) for line in Path(path).read_text().split())["DEVNAME"]
    except (OSError, KeyError, ValueError):
        return None
    return f"/dev/{name}"


async def engine_config(runs: int) -> dict[str, dict[str, float]]:
    docker = aiodocker.Docker()
    mounts = Path(tempfile.mkdtemp(prefix="berth-binds-"))
    for i in range(5):
        (mounts / str(i)).mkdir()
    variants = _variants(mounts)
    times: dict[str, list[float]] = {name: [] for name in variants}
    removals: dict[str, list[float]] = {name: [] for name in variants}
    try:
        for i in range(runs):
            order = list(variants) if i % 2 == 0 else list(reversed(variants))
            for name in order:
                t0 = time.perf_counter()
                made = await docker._query_json("containers/create", method="POST",
                                                data=json.dumps(variants[name]))
                async with docker._query(f"containers/{made['Id']}/start", method="POST"):
                    pass
                times[name].append(time.perf_counter() - t0)
                await asyncio.sleep(0.2)
                t0 = time.perf_counter()
                async with docker._query(f"containers/{made['Id']}", method="DELETE",
                                         params={"force": "1"}):
                    pass
                removals[name].append(time.perf_counter() - t0)
                await asyncio.sleep(0.2)
    finally:
        await docker.close()
        for i in range(5):
            (mounts / str(i)).rmdir()
        mounts.rmdir()  # noqa: ASYNC240 - between measures
    return {"create_start": {name: _ms(values) for name, values in times.items()},
            "remove": {name: _ms(values) for name, values in removals.items()}}


# ---------------------------------------------------------------- 16 at once, port or not
async def publish16(rounds: int) -> dict[str, float]:
    async def one(publish: tuple[str, ...]) -> str:
        cid = await bc.docker("run", "-d", "--init", "--label", bc.TEST_LABEL, "--label",
                              bc.BENCH_LABEL, *publish, bc.PYTHON_IMAGE, "sleep", "infinity")
        await bc.docker("exec", cid, "python3", "-c", "pass")
        return cid

    sides = {"16 x docker run + exec": (), "16 x docker run -p + exec": ("-p", "127.0.0.1::8080")}
    times: dict[str, list[float]] = {name: [] for name in sides}
    for i in range(rounds):
        for name in list(sides) if i % 2 == 0 else list(reversed(sides)):
            t0 = time.perf_counter()
            cids = await asyncio.gather(*(one(sides[name]) for _ in range(16)))
            times[name].append(time.perf_counter() - t0)
            await asyncio.gather(*(bc.docker("rm", "-f", c) for c in cids))
            await asyncio.sleep(1.0)
    return {name: _ms(values) for name, values in times.items()}


async def work(runs: int, rounds: int) -> dict[str, Any]:
    return {"runs": runs, "timeline_ms": await timeline(runs),
            "engine_config_ms": await engine_config(runs),
            "publish16_rounds": rounds, "publish16_ms": await publish16(rounds)}


def rows(r: dict[str, Any]) -> list[tuple[str, str, str, str]]:
    one, two = r["timeline_ms"]["cpu=1"], r["timeline_ms"]["cpu=2"]
    out = [(f"timeline: {name} (cpu=1; cpu=2 in the baseline column)", f"{one[name]} ms",
            f"{two[name]} ms", "-") for name, _, _ in STEPS]
    for step, label in (("create_start", "create+start"), ("remove", "remove (rm -f)")):
        measured = r["engine_config_ms"][step]
        bare = measured["bare --init"]
        out += [(f"engine {label}: {name}", f"{ms} ms", f"{bare} ms (bare)",
                 f"{ms / bare:.2f}×") for name, ms in measured.items()]
    plain, port = r["publish16_ms"].values()
    out.append(("16 x docker run + exec, -p vs without", f"{port} ms", f"{plain} ms",
                f"{port / plain:.2f}×"))
    return out


def main() -> None:
    p = bc.parser(__doc__.splitlines()[0], default_runs=8)
    p.add_argument("--rounds", type=int, default=4, help="rounds of the 16-at-once measure")
    args = p.parse_args()
    bc.require_images(bc.PYTHON_IMAGE)
    bc.run_and_emit("create_breakdown", work(args.runs, args.rounds), rows, args.out)


if __name__ == "__main__":
    main()
