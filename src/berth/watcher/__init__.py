"""The watcher: a separate process that supervises the agent and exposes it over HTTP (6009)."""

from berth.watcher.app import TOKEN_HEADER, make_app
from berth.watcher.server import WatcherConfig, WatcherServer, ssl_context
from berth.watcher.supervisor import AgentStatus, AgentSupervisor, default_agent_command
from berth.watcher.token import generate_token_file, load_token

__all__ = [
    "TOKEN_HEADER", "AgentStatus", "AgentSupervisor", "WatcherConfig", "WatcherServer",
    "default_agent_command", "generate_token_file", "load_token", "make_app", "ssl_context",
]
