from __future__ import annotations

import asyncio

import pytest

from berth.client import AgentClient
from berth.errors import ConfigError, RPCTimeout
from berth.rpc import codec
from berth.rpc.fake import Loopback


async def test_timeout_raises_and_sends_cancel() -> None:
    hub = Loopback()
    client = AgentClient(transport=hub.client_transport(), timeout=0.05, agent_id="a1")
    connect = asyncio.create_task(client.__aenter__())
    ping = await asyncio.wait_for(hub.to_server.get(), 1)  # play the server by hand
    hub.to_clients[ping[0]].put_nowait([codec.PONG, b"", b""])
    await connect
    try:
        with pytest.raises(RPCTimeout):
            await client.check_running("k1")
        request = await hub.to_server.get()
        req = codec.decode_request(request[2], request[3])
        assert req.args == ["k1"] and req.kwargs == {"agent_id": "a1"}
        cancel = await hub.to_server.get()
        assert codec.decode_header(cancel[2]).type is codec.MsgType.CANCEL
    finally:
        await client.__aexit__(None, None, None)


def test_curve_needs_both_keys() -> None:
    with pytest.raises(ConfigError):
        AgentClient("127.0.0.1:1", server_public_key=b"x" * 40)
