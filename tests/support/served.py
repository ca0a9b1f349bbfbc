"""An AgentClient that brings its own in-memory RPC server up, for CLI tests in one process."""

from __future__ import annotations

from typing import Self

from berth.client import AgentClient
from berth.rpc import HandlerRegistry, RPCServer
from berth.rpc.fake import FakeAgent, Loopback


class ServedClient(AgentClient):
    """Serves ``agent`` over a Loopback hub in the caller's event loop (the CLI's own)."""

    def __init__(self, agent: FakeAgent | object, *, refuse: bool = False,
                 handshake_timeout: float = 0.5) -> None:
        self.hub = Loopback()
        super().__init__(transport=self.hub.client_transport(refuse=refuse),
                         handshake_timeout=handshake_timeout)
        self.server = RPCServer(HandlerRegistry(agent), "x:0", plain=True,
                                transport=self.hub.server_transport())

    async def __aenter__(self) -> Self:
        await self.server.start()
        try:
            return await super().__aenter__()
        except BaseException:
            await self.server.close()
            raise

    async def __aexit__(self, *exc: object) -> None:
        await super().__aexit__(*exc)
        await self.server.close()
