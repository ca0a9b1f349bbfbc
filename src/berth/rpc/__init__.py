"""The agent's RPC server: callosum 1.0.3 wire protocol over ZeroMQ with CurveZMQ."""

from berth.rpc.codec import MsgType
from berth.rpc.handlers import METHOD_NAMES, HandlerRegistry
from berth.rpc.keys import (
    KeyPair,
    generate_keypair,
    load_keypair,
    load_public_keys,
    server_security,
)
from berth.rpc.server import DEFAULT_MAX_BODY_SIZE, OnRequest, RPCServer
from berth.rpc.transport import CurveServerSecurity

__all__ = [
    "DEFAULT_MAX_BODY_SIZE",
    "METHOD_NAMES",
    "CurveServerSecurity",
    "HandlerRegistry",
    "KeyPair",
    "MsgType",
    "OnRequest",
    "RPCServer",
    "generate_keypair",
    "load_keypair",
    "load_public_keys",
    "server_security",
]
