"""Every addressable request gets a typed reply, and the client notices a lost agent fast.

Real ZeroMQ sockets with CurveZMQ on 127.0.0.1. The "agent" that is killed, frozen and
restarted is a separate process running the real :class:`~berth.rpc.RPCServer` over the
in-memory facade (``FakeAgent``: ``execute_code(k, "sleep N")`` is a slow call), stopped by PID.
"""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest
import zmq
import zmq.asyncio
from support.procs import free_port, wait_until

from berth.cli.state import EXIT_CONNECTION, exit_code
from berth.client import AgentClient
from berth.errors import AgentUnreachable, RequestTooLarge
from berth.rpc import (
    HandlerRegistry,
    RPCServer,
    codec,
    generate_keypair,
    load_keypair,
    server_security,
)
from berth.rpc.fake import FakeAgent

LIMIT = 64 * 1024  # rpc-max-body-size of every server here


class Keys:
    def __init__(self, d: Path) -> None:
        for name in ("agent", "manager"):
            generate_keypair(d, name)
        self.dir = d
        self.agent = load_keypair(d / "agent.key_secret")
        self.manager = load_keypair(d / "manager.key_secret")

    def client(self, endpoint: str, **kw: Any) -> AgentClient:
        return AgentClient(endpoint, self.agent.public_key, self.manager, **kw)


@pytest.fixture
def keys(tmp_path: Path) -> Keys:
    return Keys(tmp_path)


@pytest.fixture
async def server(keys: Keys) -> AsyncIterator[RPCServer]:
    sec = server_security(keys.dir / "agent.key_secret", [keys.dir / "manager.key"])
    srv = RPCServer(HandlerRegistry(FakeAgent()), "127.0.0.1:0", security=sec,
                    max_body_size=LIMIT)
    await srv.start()
    yield srv
    await srv.close()


# ───────────────────────────────────────────────────────────── oversized bodies


async def test_oversized_body_gets_a_typed_failure_frame_promptly(server: RPCServer,
                                                                  keys: Keys) -> None:
    """At the wire level, as a callosum peer sees it: a FAILURE frame naming the error,
    addressed to the request's (meth, okey, seq)."""
    ctx = zmq.asyncio.Context()
    sock = ctx.socket(zmq.DEALER)
    sock.setsockopt(zmq.LINGER, 0)
    sock.curve_serverkey, sock.curve_publickey = keys.agent.public_key, keys.manager.public_key
    sock.curve_secretkey = keys.manager.secret_key
    sock.connect(server.endpoint)
    try:
        header, body = codec.encode_request("ping", 41, ["x" * (3 * LIMIT)], {})
        t0 = time.monotonic()
        await sock.send_multipart([codec.UPPER, header, body])
        assert await sock.poll(5000), "no reply to an oversized request"
        kind, raw_header, raw_body = await sock.recv_multipart()
        assert time.monotonic() - t0 < 3
        reply = codec.decode_reply(raw_header, raw_body)
        assert kind == codec.UPPER
        assert (reply.header.type, reply.header.meth, reply.header.seq) == (
            codec.MsgType.FAILURE, "ping", 41)
        assert reply.error is not None and reply.error[0] == "RequestTooLarge"
    finally:
        sock.close()
        ctx.term()


async def test_oversized_body_raises_request_too_large_and_server_serves_on(
        server: RPCServer, keys: Keys) -> None:
    async with keys.client(server.endpoint, timeout=60) as c:
        t0 = time.monotonic()
        with pytest.raises(RequestTooLarge) as err:
            await asyncio.wait_for(c.ping("x" * (2 * LIMIT)), 15)
        assert time.monotonic() - t0 < 3
        assert err.value.data["limit"] == LIMIT
        assert await c.ping("after") == "after"


async def test_body_beyond_the_transport_cap_fails_fast_and_the_client_recovers(
        server: RPCServer, keys: Keys) -> None:
    """Far over the limit ZeroMQ drops the connection unread (no memory spent on it); the
    client must not wait out its 60 s timeout, and its next call works."""
    async with keys.client(server.endpoint, timeout=60) as c:
        t0 = time.monotonic()
        with pytest.raises(AgentUnreachable):
            await asyncio.wait_for(c.ping("x" * (32 * LIMIT)), 15)
        assert time.monotonic() - t0 < 5
        assert await asyncio.wait_for(c.ping("again"), 15) == "again"


def test_agent_unreachable_is_exit_code_4() -> None:
    assert exit_code(AgentUnreachable("gone")) == EXIT_CONNECTION == 4


# ───────────────────────────────────────────────────────────── a lost agent

_SERVER = """
import asyncio, sys
from pathlib import Path
from berth.rpc import HandlerRegistry, RPCServer, server_security
from berth.rpc.fake import FakeAgent

async def main(port, keydir):
    agent = FakeAgent()
    agent.kernels["k"] = {"id": "k", "state": "RUNNING"}
    sec = server_security(keydir / "agent.key_secret", [keydir / "manager.key"])
    async with RPCServer(HandlerRegistry(agent), f"127.0.0.1:{port}", security=sec):
        await asyncio.Event().wait()

asyncio.run(main(int(sys.argv[1]), Path(sys.argv[2])))
"""


class AgentProc:
    """The real RPC server in a child process on a fixed port; kill -9, -STOP, restart."""

    def __init__(self, keys: Keys) -> None:
        self.keys, self.port = keys, free_port()
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def endpoint(self) -> str:
        return f"tcp://127.0.0.1:{self.port}"

    def start(self) -> None:
        self.proc = subprocess.Popen([sys.executable, "-c", _SERVER, str(self.port),
                                      str(self.keys.dir)], stdin=subprocess.DEVNULL)
        wait_until(self._listening, what="the RPC server process", timeout=20, proc=self.proc)

    def _listening(self) -> bool:
        out = subprocess.run(["ss", "-Hltn", f"sport = :{self.port}"], capture_output=True,
                             text=True, check=False).stdout
        return bool(out.strip())

    def signal(self, sig: signal.Signals) -> None:
        assert self.proc is not None
        os.kill(self.proc.pid, sig)

    def kill9(self) -> None:
        self.signal(signal.SIGKILL)
        assert self.proc is not None
        self.proc.wait(10)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGCONT)
            self.kill9()


@pytest.fixture
def agent_proc(keys: Keys) -> Iterator[AgentProc]:
    proc = AgentProc(keys)
    proc.start()
    try:
        yield proc
    finally:
        proc.stop()


async def _in_flight_call_fails(c: AgentClient, action: Any) -> float:
    """Start a 30 s call, run ``action``, return how long the call took to fail."""
    call = asyncio.create_task(c.execute_code("k", "sleep 30"))
    await asyncio.sleep(0.5)
    assert not call.done()
    t0 = time.monotonic()
    action()
    with pytest.raises(AgentUnreachable):
        await asyncio.wait_for(call, 20)  # 20: a hang fails the test, not the suite
    return time.monotonic() - t0


async def test_agent_killed_mid_call_fails_the_call_fast_then_reconnects(
        agent_proc: AgentProc, keys: Keys) -> None:
    async with keys.client(agent_proc.endpoint, timeout=60) as c:
        assert await c.ping("up") == "up"
        assert await _in_flight_call_fails(c, agent_proc.kill9) < 10
        with pytest.raises(AgentUnreachable):  # down: a new call fails, does not queue
            await asyncio.wait_for(c.ping("down"), 20)
        agent_proc.start()  # restarted on the same port, same keys
        assert await asyncio.wait_for(c.ping("back"), 20) == "back"


async def test_frozen_agent_is_noticed_by_heartbeat(agent_proc: AgentProc,
                                                    keys: Keys) -> None:
    """SIGSTOP keeps the TCP connection open: only heartbeats can tell the agent is gone."""
    async with keys.client(agent_proc.endpoint, timeout=60, heartbeat=0.5) as c:
        assert await c.ping("up") == "up"
        took = await _in_flight_call_fails(c, lambda: agent_proc.signal(signal.SIGSTOP))
        assert took < 10
        agent_proc.signal(signal.SIGCONT)
        assert await asyncio.wait_for(c.ping("thawed"), 20) == "thawed"
