"""Code execution inside kernels: the in-container runner and the agent's side of it.

The directory holding this package's stdlib-only runner files (`RUNNER_DIR`) is bind-mounted
read-only at `CONTAINER_RUNNER_DIR`; `runner_command()` builds the container's command. The
agent then talks to the runner with `RunnerClient` over the Unix socket the runner binds in the
kernel's `config/sock/` directory (sealed by the agent once bound; logs stay in `config/ipc/`); images without a usable interpreter get `BatchExecFallback`.
"""

from __future__ import annotations

from pathlib import Path

from berth.errors import InvalidArgument
from berth.runner.client import RunnerClient
from berth.runner.fallback import BatchExecFallback, ExecInContainer
from berth.runner.readiness import ReadySignal
from berth.runner.results import WORKER_EXIT, next_result
from berth.runner.serviceports import INTRINSIC_SERVICES, ServicePort, ServicePortsError
from berth.runner.serviceports import parse_service_ports as _parse_service_ports

__all__ = [
    "CONTAINER_IPC_DIR",
    "CONTAINER_RUNNER_DIR",
    "CONTAINER_SOCKET",
    "CONTAINER_SOCK_DIR",
    "INTRINSIC_SERVICES",
    "RUNNER_DIR",
    "SOCKET_NAME",
    "WORKER_EXIT",
    "BatchExecFallback",
    "ExecInContainer",
    "ReadySignal",
    "RunnerClient",
    "ServicePort",
    "next_result",
    "parse_service_ports",
    "runner_command",
]

RUNNER_DIR = Path(__file__).resolve().parent
CONTAINER_RUNNER_DIR = "/opt/berth/runner"
CONTAINER_IPC_DIR = "/home/config/ipc"
CONTAINER_SOCK_DIR = "/home/config/sock"
SOCKET_NAME = "runner.sock"
CONTAINER_SOCKET = f"{CONTAINER_SOCK_DIR}/{SOCKET_NAME}"
SERVICE_DEFS_DIR = "/etc/backend.ai/service-defs"


def runner_command(runtime_path: str, *, bootstrap: str | None = None,
                   service_defs: str | None = SERVICE_DEFS_DIR,
                   exec_timeout: float | None = None) -> list[str]:
    """The container's Cmd: the image's interpreter running the mounted krunner.py."""
    cmd = [runtime_path, f"{CONTAINER_RUNNER_DIR}/krunner.py", "--socket", CONTAINER_SOCKET,
           "--ipc", CONTAINER_IPC_DIR, "--work", "/home/work", "--config", "/home/config"]
    if bootstrap:
        cmd += ["--bootstrap", bootstrap]
    if service_defs:
        cmd += ["--service-defs", service_defs]
    if exec_timeout:
        cmd += ["--exec-timeout", str(exec_timeout)]
    return cmd


def parse_service_ports(label: str) -> list[ServicePort]:
    """Parse `ai.backend.service-ports`; a malformed label raises InvalidArgument."""
    try:
        return _parse_service_ports(label)
    except ServicePortsError as exc:
        raise InvalidArgument(str(exc), field="ai.backend.service-ports", entry=exc.entry) from exc
