"""RPC round trip and calls/s over CurveZMQ: berth RPCServer + AgentClient `ping` vs a raw
pyzmq DEALER/ROUTER echo with Curve, same run, alternating.

A third side isolates the server: a raw DEALER sending callosum-framed `ping` requests (the
bytes a Manager's client sends) to the berth server and decoding its replies, so the ratio
against the raw echo is what the agent's server adds, without Berth's own client.

Each server runs in its own process (this script with `--serve`), both started at once and
both with Curve and a ZAP allow-list holding the client's key; the clients run here. A
round trip is one call awaited before the next; calls/s keeps `--inflight` calls
outstanding until `--calls` have been answered.

    .venv/bin/python benchmarks/rpc.py --runs 5
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import bench_common as bc
import zmq
import zmq.asyncio
from zmq.auth.asyncio import AsyncioAuthenticator

from berth.client import AgentClient
from berth.rpc import HandlerRegistry, RPCServer, codec, server_security

Probe = Callable[[], Awaitable[None]]


# ---------------------------------------------------------------- servers (child processes)
class PingOnly:
    """The agent facade's `ping`, the same signature; nothing else is served."""

    async def ping(self, msg: str = "ping", agent_id: str | None = None) -> str:
        return msg


async def serve_berth(port: int, keys: bc.Keys) -> None:
    security = server_security(keys.agent_pair, [keys.manager_public])
    async with RPCServer(HandlerRegistry(PingOnly()), f"127.0.0.1:{port}", security=security):
        await asyncio.Event().wait()


async def serve_raw(port: int, keys: bc.Keys) -> None:
    ctx = zmq.asyncio.Context()
    auth = AsyncioAuthenticator(ctx)
    auth.start()
    auth.configure_curve(domain="*", location=str(keys.manager_public.parent))
    sock = ctx.socket(zmq.ROUTER)
    sock.setsockopt(zmq.CURVE_SERVER, 1)
    sock.setsockopt(zmq.CURVE_SECRETKEY, keys.agent.secret_key)
    sock.bind(f"tcp://127.0.0.1:{port}")
    while True:
        await sock.send_multipart(await sock.recv_multipart())


def serve(kind: str, port: int, keydir: Path, log_level: str) -> None:
    logging.basicConfig(level=log_level, filename=str(keydir.parent / f"{kind}.log"))
    keys = bc.load_keys(keydir)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    asyncio.run(serve_berth(port, keys) if kind == "berth" else serve_raw(port, keys))


@contextlib.contextmanager
def servers(keydir: Path, log_level: str) -> Iterator[dict[str, int]]:
    ports = {"berth": bc.free_port(), "raw": bc.free_port()}
    procs = [subprocess.Popen([sys.executable, __file__, "--serve", kind, "--port", str(port),
                               "--keydir", str(keydir), "--server-log-level", log_level])
             for kind, port in ports.items()]
    try:
        yield ports
    finally:
        for p in procs:
            p.terminate()
        for p in procs:
            p.wait(10)


# ---------------------------------------------------------------- clients (this process)
class RawClient:
    def __init__(self, port: int, keys: bc.Keys) -> None:
        self.ctx = zmq.asyncio.Context()
        self.sock = self.ctx.socket(zmq.DEALER)
        self.sock.setsockopt(zmq.CURVE_SERVERKEY, keys.agent.public_key)
        self.sock.setsockopt(zmq.CURVE_PUBLICKEY, keys.manager.public_key)
        self.sock.setsockopt(zmq.CURVE_SECRETKEY, keys.manager.secret_key)
        self.sock.connect(f"tcp://127.0.0.1:{port}")

    async def call(self) -> None:
        await self.sock.send_multipart([b"ping"])
        if await self.sock.recv_multipart() != [b"ping"]:
            raise RuntimeError("raw echo answered something else")

    async def burst(self, calls: int, inflight: int) -> None:
        """Keep `inflight` requests outstanding until `calls` replies came back."""
        sent = received = 0
        while sent < min(inflight, calls):
            await self.sock.send_multipart([b"ping"])
            sent += 1
        while received < calls:
            await self.sock.recv_multipart()
            received += 1
            if sent < calls:
                await self.sock.send_multipart([b"ping"])
                sent += 1

    def close(self) -> None:
        self.sock.close(0)
        self.ctx.term()


class FramedClient(RawClient):
    """Callosum's frames over a raw DEALER: what the berth server costs on its own."""

    def __init__(self, port: int, keys: bc.Keys) -> None:
        super().__init__(port, keys)
        self.seq = 0

    async def call(self) -> None:
        self.seq += 1
        await self.sock.send_multipart([codec.UPPER,
                                        *codec.encode_request("ping", self.seq, ["ping"], {})])
        frames = await self.sock.recv_multipart()
        if codec.decode_reply(frames[1], frames[2]).value != "ping":
            raise RuntimeError("berth ping answered something else")


async def berth_call(client: AgentClient) -> None:
    if await client.ping("ping") != "ping":
        raise RuntimeError("berth ping answered something else")


async def berth_burst(client: AgentClient, calls: int, inflight: int) -> None:
    async def worker(n: int) -> None:
        for _ in range(n):
            await berth_call(client)

    share, extra = divmod(calls, inflight)
    await asyncio.gather(*(worker(share + (i < extra)) for i in range(inflight)))


async def latency(call: Probe, n: int) -> list[float]:
    out = []
    for _ in range(n):
        t0 = time.perf_counter()
        await call()
        out.append(time.perf_counter() - t0)
    return out


async def throughput(burst: Probe, calls: int) -> float:
    t0 = time.perf_counter()
    await burst()
    return calls / (time.perf_counter() - t0)


async def connect_raw(port: int, keys: bc.Keys) -> RawClient:
    raw = RawClient(port, keys)
    async with asyncio.timeout(10):
        await raw.call()  # first call waits for the server and the Curve handshake
    return raw


async def connect_berth(port: int, keys: bc.Keys) -> AgentClient:
    for _ in range(50):
        client = AgentClient(f"tcp://127.0.0.1:{port}", keys.agent.public_key, keys.manager,
                             handshake_timeout=0.5)
        with contextlib.suppress(Exception):
            await client.__aenter__()
            return client
    raise RuntimeError("berth RPC server did not answer")


async def main(runs: int, calls: int, inflight: int, keydir: Path,
               log_level: str) -> dict[str, Any]:
    keys = bc.load_keys(keydir)
    with servers(keydir, log_level) as ports:
        raw = await connect_raw(ports["raw"], keys)
        client = await connect_berth(ports["berth"], keys)
        framed = FramedClient(ports["berth"], keys)
        try:
            sides = {"berth": (lambda: berth_call(client),
                               lambda: berth_burst(client, calls, inflight)),
                     "raw": (raw.call, lambda: raw.burst(calls, inflight)),
                     "berth_server": (framed.call, None)}
            lat: dict[str, list[float]] = {k: [] for k in sides}
            rate: dict[str, list[float]] = {k: [] for k in sides if sides[k][1] is not None}
            for call, _ in sides.values():  # warm-up, not counted
                await latency(call, 50)
            order = list(sides)
            for i in range(runs):
                for k in order[i % 3:] + order[:i % 3]:  # the side that goes first rotates
                    call, burst = sides[k]
                    lat[k] += await latency(call, calls // 4)
                    if burst is not None:
                        rate[k].append(await throughput(burst, calls))
        finally:
            raw.close()
            framed.close()
            await client.__aexit__(None, None, None)
    med = {k: sorted(v)[len(v) // 2] for k, v in rate.items()}
    return {"runs": runs, "calls_per_burst": calls, "inflight": inflight,
            "server_log_level": log_level,
            "round_trip": {k: {**bc.summary(v), "p95_ms": p95_ms(v)} for k, v in lat.items()},
            "calls_per_s_median": {k: round(v) for k, v in med.items()},
            "calls_per_s_all": {k: [round(x) for x in v] for k, v in rate.items()}}


def p95_ms(samples: list[float]) -> float:
    ms = sorted(s * 1000 for s in samples)
    return round(ms[min(len(ms) - 1, round(0.95 * (len(ms) - 1)))], 3)


def rows(r: dict[str, Any]) -> list[tuple[str, str, str, str]]:
    rt, cps = r["round_trip"], r["calls_per_s_median"]
    return [("round trip (ping vs raw echo), Curve",
             f"{rt['berth']['median_ms']:.3f} ms", f"{rt['raw']['median_ms']:.3f} ms",
             f"{bc.ratio(rt['berth'], rt['raw']):.2f}×"),
            ("round trip p95", f"{rt['berth']['p95_ms']:.3f} ms",
             f"{rt['raw']['p95_ms']:.3f} ms", f"{rt['berth']['p95_ms'] / rt['raw']['p95_ms']:.2f}×"),
            ("round trip, server only (callosum frames from a raw DEALER)",
             f"{rt['berth_server']['median_ms']:.3f} ms", f"{rt['raw']['median_ms']:.3f} ms",
             f"{bc.ratio(rt['berth_server'], rt['raw']):.2f}×"),
            (f"calls/s, {r['inflight']} in flight", f"{cps['berth']}", f"{cps['raw']}",
             f"{cps['berth'] / cps['raw']:.2f}×")]


if __name__ == "__main__":
    p = bc.parser(__doc__.splitlines()[0], default_runs=5)
    p.add_argument("--calls", type=int, default=2000, help="calls per throughput burst")
    p.add_argument("--inflight", type=int, default=32)
    p.add_argument("--serve", choices=["berth", "raw"], help="internal: run one server")
    p.add_argument("--port", type=int)
    p.add_argument("--keydir", type=Path)
    p.add_argument("--server-log-level", default="INFO",
                   help="the agent's level: the server logs `ping` at DEBUG (a probe) and every "
                        "state-changing call at INFO, after its reply")
    args = p.parse_args()
    if args.serve:
        serve(args.serve, args.port, args.keydir, args.server_log_level)
        sys.exit(0)
    tmp = Path(tempfile.mkdtemp(prefix="berth-bench-rpc-"))
    try:
        bc.make_keys(tmp / "keys")
        result = asyncio.run(main(args.runs, args.calls, args.inflight, tmp / "keys",
                                 args.server_log_level))
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    bc.emit("rpc", rows(result), result, args.out)
