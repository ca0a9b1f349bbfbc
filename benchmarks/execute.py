"""`print(1)` through `execute` on a warm kernel vs `docker exec <c> python3 -c 'print(1)'`.

Berth: a real agent process (`berth start-server`) over RPC with CurveZMQ; one warm Python
kernel; each sample is one `execute` RPC in query mode, checked for stdout "1\\n". Baseline:
a `docker run -d --init` container of the same image; each sample is one `docker exec`.
Samples alternate between the two sides.

    .venv/bin/python benchmarks/execute.py --runs 30
"""

from __future__ import annotations

import time
from typing import Any

import bench_common as bc


async def berth_exec(agent: bc.AgentProcess, kid: str) -> float:
    t0 = time.perf_counter()
    r = await agent.client.execute(kid, kid, 2, bc.new_id(), "query", "print(1)", {})
    elapsed = time.perf_counter() - t0
    if r["status"] != "finished" or r["console"] != [["stdout", "1\n"]]:
        raise RuntimeError(f"unexpected execute result: {r}")
    return elapsed


async def docker_exec(cid: str) -> float:
    t0 = time.perf_counter()
    out = await bc.docker("exec", cid, "python3", "-c", "print(1)")
    elapsed = time.perf_counter() - t0
    if out != "1":
        raise RuntimeError(f"unexpected docker exec output: {out!r}")
    return elapsed


async def main(runs: int) -> dict[str, Any]:
    bc.require_images(bc.PYTHON_IMAGE)
    async with bc.agent_process() as agent:
        kid = bc.new_id()
        await agent.client.create_kernels(kid, [kid], [bc.kernel_config()], {})
        cid = await bc.docker_run(bc.PYTHON_IMAGE, "sleep", "infinity")
        try:
            await berth_exec(agent, kid)  # warm-up, not counted
            await docker_exec(cid)
            b, d = [], []
            for i in range(runs):
                if i % 2 == 0:
                    b.append(await berth_exec(agent, kid))
                    d.append(await docker_exec(cid))
                else:
                    d.append(await docker_exec(cid))
                    b.append(await berth_exec(agent, kid))
        finally:
            await bc.docker("rm", "-f", cid)
            await agent.client.destroy_kernel(kid, kid)
    return {"mode": "agent process (berth start-server) over RPC with CurveZMQ", "runs": runs,
            "execute_print1": {"berth": bc.summary(b), "docker": bc.summary(d)}}


def rows(r: dict[str, Any]) -> list[tuple[str, str, str, str]]:
    pair = r["execute_print1"]
    return [("execute print(1), warm kernel (docker exec python3 -c)", bc.fmt(pair["berth"]),
             bc.fmt(pair["docker"]), f"{bc.ratio(pair['berth'], pair['docker']):.3f}×")]


if __name__ == "__main__":
    args = bc.parser(__doc__.splitlines()[0], default_runs=30).parse_args()
    bc.run_and_emit("execute", main(args.runs), rows, args.out)
