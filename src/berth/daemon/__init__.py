"""The daemon: the agent that wires the subsystems together (``Agent``), the RPC surface the
Manager calls (``AgentFacade``), the process around them (``main``: signals, start, stop) and
the adapters between the kernel lifecycle's roles and the subsystems that fill them."""
from berth.daemon.agent import Agent
from berth.daemon.facade import AgentFacade
from berth.daemon.server import main

__all__ = [
    "Agent",
    "AgentFacade",
    "main",
]
