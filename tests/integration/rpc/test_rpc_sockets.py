"""Real ZeroMQ sockets on 127.0.0.1: Curve, plain mode, robustness, callosum interop."""

from __future__ import annotations

import asyncio
import json
import random
import threading
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any, Self

import pytest
import zmq
import zmq.asyncio
from click.testing import CliRunner

from berth.cli import cli
from berth.client import AgentClient
from berth.errors import AuthenticationFailed, KernelNotFound
from berth.rpc import (
    HandlerRegistry,
    RPCServer,
    codec,
    generate_keypair,
    load_keypair,
    serial,
    server_security,
)
from berth.rpc.fake import FakeAgent


class Keys:
    def __init__(self, d: Path) -> None:
        for name in ("agent", "manager", "intruder"):
            generate_keypair(d, name)
        self.dir = d
        self.agent = load_keypair(d / "agent.key_secret")
        self.manager = load_keypair(d / "manager.key_secret")
        self.intruder = load_keypair(d / "intruder.key_secret")


@pytest.fixture
def keys(tmp_path: Path) -> Keys:
    return Keys(tmp_path)


@pytest.fixture
async def curve_server(keys: Keys) -> AsyncIterator[tuple[RPCServer, FakeAgent]]:
    agent = FakeAgent()
    sec = server_security(keys.dir / "agent.key_secret", [keys.dir / "manager.key"])
    server = RPCServer(HandlerRegistry(agent), "127.0.0.1:0", security=sec,
                       max_body_size=64 * 1024)
    await server.start()
    yield server, agent
    await server.close()


def manager_client(server: RPCServer, keys: Keys, **kw: Any) -> AgentClient:
    return AgentClient(server.endpoint, keys.agent.public_key, keys.manager, **kw)


async def test_curve_allowed_key_drives_a_kernel(curve_server: Any, keys: Keys) -> None:
    server, _agent = curve_server
    async with manager_client(server, keys) as c:
        assert await c.ping() == "ping"
        await c.create_kernels("s1", ["k1"], [{"image": {"canonical": "img"}}], {}, {})
        assert await c.check_running("k1") is True
        assert (await c.get_status())["kernels"][0]["id"] == "k1"
        assert "container_id" in await c.restart_kernel("s1", "k1", {"canonical": "img"}, {})
        await c.destroy_kernel("k1", "s1", "user-requested")
        with pytest.raises(KernelNotFound):
            await c.get_logs("k1")


async def test_unknown_key_never_reaches_a_handler(curve_server: Any, keys: Keys) -> None:
    server, agent = curve_server
    intruder = AgentClient(server.endpoint, keys.agent.public_key, keys.intruder,
                           handshake_timeout=1.0)
    with pytest.raises(AuthenticationFailed):
        async with intruder:
            pass
    no_curve = AgentClient(server.endpoint, handshake_timeout=1.0)
    with pytest.raises(AuthenticationFailed):
        async with no_curve:
            pass
    assert agent.calls == []
    async with manager_client(server, keys) as c:  # the right key is still served
        assert await c.ping("ok") == "ok"


async def test_plain_mode() -> None:
    server = RPCServer(HandlerRegistry(FakeAgent()), "127.0.0.1:0", plain=True)
    await server.start()
    try:
        async with AgentClient(server.endpoint) as c:
            assert await c.get_local_config() == {"agent": {"abuse-report-path": ""},
                                                  "watcher": {}}
    finally:
        await server.close()


def _garbage(rng: random.Random, i: int) -> list[bytes]:
    good = codec.encode_header(codec.Header(codec.MsgType.FUNCTION, "ping", "", i))
    body = codec.encode_request("ping", i, ["x"], {})[1]
    choices = [
        [rng.randbytes(rng.randint(0, 64))],
        [b"UPPER", rng.randbytes(20), rng.randbytes(20)],
        [b"UPPER", good, body[: rng.randint(0, len(body) - 1)]],
        [b"UPPER", codec.encode_request(f"nope{i}", i, [], {})[0], body],
        [b"UPPER", good, b"\x00" * rng.randint(65 * 1024, 200 * 1024)],
        [b"UPPER", good, rng.randbytes(rng.randint(0, 300))],
        [b"UPPER", good, body, b"extra"],
        [b"BOGUS", good, body],
    ]
    return rng.choice(choices)


async def test_thousand_malformed_frames_then_ping(curve_server: Any, keys: Keys) -> None:
    server, _ = curve_server
    ctx = zmq.asyncio.Context()
    sock = ctx.socket(zmq.DEALER)
    sock.setsockopt(zmq.LINGER, 0)
    sock.curve_serverkey, sock.curve_publickey = keys.agent.public_key, keys.manager.public_key
    sock.curve_secretkey = keys.manager.secret_key
    sock.connect(server.endpoint)
    rng = random.Random(1234)
    try:
        for i in range(1000):
            await sock.send_multipart(_garbage(rng, i))
        async with manager_client(server, keys) as c:
            assert await asyncio.wait_for(c.ping("alive"), 10) == "alive"
    finally:
        sock.close()
        ctx.term()


async def test_concurrency(curve_server: Any, keys: Keys) -> None:
    server, _ = curve_server
    async with manager_client(server, keys, timeout=10) as c:
        await c.create_kernels("s", ["k"], [{"image": {"canonical": "i"}}], {}, {})
        loop = asyncio.get_running_loop()
        t0 = loop.time()
        out = await asyncio.gather(*(c.execute_code("k", "sleep 0.3") for _ in range(50)))
        assert len(out) == 50 and loop.time() - t0 < 2.0
        pings = await asyncio.gather(*(c.ping(str(i)) for i in range(200)))
        assert pings == [str(i) for i in range(200)]


async def test_callosum_peer_interoperates(curve_server: Any, keys: Keys) -> None:
    from callosum.auth import AbstractClientAuthenticator, Identity
    from callosum.lower.zeromq import ZeroMQAddress, ZeroMQRPCTransport
    from callosum.rpc import Peer, RPCUserError

    class ManagerAuth(AbstractClientAuthenticator):  # as Backend.AI's ManagerAuthHandler
        async def server_public_key(self) -> bytes:
            return keys.agent.public_key

        async def client_identity(self) -> Identity:
            return Identity("local", keys.manager.secret_key)

        async def client_public_key(self) -> bytes:
            return keys.manager.public_key

    server, agent = curve_server
    peer = Peer(connect=ZeroMQAddress(server.endpoint), transport=ZeroMQRPCTransport,
                authenticator=ManagerAuth(), serializer=serial.packb,
                deserializer=serial.unpackb, invoke_timeout=10)
    sid, kid = uuid.uuid4(), uuid.uuid4()
    meta = {"request_id": "r-1"}

    def body(*args: Any, **kwargs: Any) -> dict[str, Any]:
        return {"args": args, "kwargs": {"agent_id": None, **kwargs}, "metadata": meta}

    async with peer:
        assert await peer.invoke("ping", body("ping")) == "ping"
        config = {"image": {"canonical": "cr.backend.ai/stable/python:3.11", "labels": {}},
                  "resource_slots": {"cpu": "1", "mem": "1073741824"}, "environ": {}}
        refs = {kid: {"name": "python"}}
        result = await peer.invoke("create_kernels", body(
            str(sid), [str(kid)], [config], {"mode": "single-node", "size": 1}, refs))
        assert result[0]["id"] == str(kid)
        _, call = next(c for c in agent.calls if c[0] == "create_kernels")
        assert call["image_refs"] == {kid: {"name": "python"}}  # UUID key (ext 1) survived
        status = await peer.invoke("get_status", body())
        assert status["kernels"][0]["id"] == str(kid)
        health = await peer.invoke("health_v2", {"args": (), "kwargs": {"req": {},
                                                                        "agent_id": None}})
        assert health["status"] == "ok"
        assert await peer.invoke("destroy_kernel", body(str(kid), str(sid), "user-requested",
                                                         suppress_events=False)) is None
        with pytest.raises(RPCUserError) as err:
            await peer.invoke("destroy_kernel", body(str(kid), str(sid), None))
        assert err.value.args[0] == "KernelNotFound"
        with pytest.raises(RPCUserError):
            await peer.invoke("no_such_method", body())
        assert await peer.invoke("ping", body("after")) == "after"


class ServerThread:
    """An RPC server in its own thread and loop, for the synchronous CliRunner."""

    def __init__(self, keys: Keys) -> None:
        self.keys, self.agent = keys, FakeAgent()
        self.loop = asyncio.new_event_loop()
        self.ready = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.endpoint = ""

    def _run(self) -> None:
        asyncio.set_event_loop(self.loop)
        sec = server_security(self.keys.dir / "agent.key_secret", [self.keys.dir])
        self.server = RPCServer(HandlerRegistry(self.agent), "127.0.0.1:0", security=sec)
        self.loop.run_until_complete(self.server.start())
        self.endpoint = self.server.endpoint
        self.ready.set()
        self.loop.run_forever()
        self.loop.run_until_complete(self.server.close())
        self.loop.close()

    def __enter__(self) -> Self:
        self.thread.start()
        assert self.ready.wait(10), "RPC server did not start"
        return self

    def __exit__(self, *exc: object) -> None:
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)


@pytest.fixture
def threaded_server(keys: Keys) -> Iterator[ServerThread]:
    with ServerThread(keys) as st:
        yield st


def test_cli_drives_a_kernel_over_curve(threaded_server: ServerThread, keys: Keys) -> None:
    base = ["--addr", threaded_server.endpoint, "--server-key", str(keys.dir / "agent.key"),
            "--client-keypair", str(keys.dir / "manager.key_secret")]
    run = CliRunner().invoke
    res = run(cli, [*base, "kernel", "create", "--image", "berth/busybox", "--kernel-id", "k9"])
    assert res.exit_code == 0, res.output
    listed = run(cli, [*base, "--json", "kernel", "ls"])
    assert [k["id"] for k in json.loads(listed.output)] == ["k9"]
    assert run(cli, [*base, "kernel", "restart", "k9"]).exit_code == 0
    assert run(cli, [*base, "kernel", "rm", "k9"]).exit_code == 0
    assert run(cli, [*base, "kernel", "show", "k9"]).exit_code == 3
    generate_keypair(keys.dir / "other", "x")  # a key outside the allow-listed directory
    wrong = ["--addr", threaded_server.endpoint, "--server-key", str(keys.dir / "agent.key"),
             "--client-keypair", str(keys.dir / "other" / "x.key_secret")]
    assert run(cli, [*wrong, "agent", "status"]).exit_code == 4
