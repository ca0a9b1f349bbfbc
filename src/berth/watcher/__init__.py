"""The watcher: a separate process that supervises the agent and exposes it over HTTP (6009)."""

from berth.watcher.app import TOKEN_HEADER, make_app
from berth.watcher.kernels import KernelCounter, docker_kernel_counter
from berth.watcher.procstat import ProcessSampler
from berth.watcher.server import WatcherConfig, WatcherServer, ssl_context
from berth.watcher.supervisor import AgentStatus, AgentSupervisor, default_agent_command
from berth.watcher.token import generate_token_file, load_token

__all__ = [
    "TOKEN_HEADER", "AgentStatus", "AgentSupervisor", "KernelCounter", "ProcessSampler",
    "WatcherConfig", "WatcherServer", "default_agent_command", "docker_kernel_counter",
    "generate_token_file", "load_token", "make_app", "ssl_context",
]
