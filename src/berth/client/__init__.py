"""Async client for the agent's RPC (callosum wire protocol, CurveZMQ)."""

from berth.client.client import (
    DEFAULT_ADDR,
    AgentClient,
    ClientTransport,
    RPCClient,
    load_client_keys,
)

__all__ = ["DEFAULT_ADDR", "AgentClient", "ClientTransport", "RPCClient", "load_client_keys"]
