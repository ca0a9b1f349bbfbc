"""Code execution inside kernels: the in-container runner and the agent's side of it.

The runner's kernel side, `kernel_side/` (`RUNNER_DIR`: stdlib only), is bind-mounted
read-only at `CONTAINER_RUNNER_DIR` (the kernel subsystem builds the container's command from
these constants). The agent then talks to the runner with `RunnerClient` over the Unix socket
the runner binds in the kernel's `config/sock/` directory (sealed by the agent once bound; logs
stay in `config/ipc/`); images without a usable interpreter get `BatchExecFallback`.
"""

from __future__ import annotations

from pathlib import Path

from berth.runner.client import RunnerClient
from berth.runner.fallback import BatchExecFallback, ExecInContainer
from berth.runner.readiness import ReadySignal
from berth.runner.results import WORKER_EXIT, next_result
from berth.storage import RUNNER, SOCKET_NAME

__all__ = [
    "CONTAINER_IPC_DIR",
    "CONTAINER_RUNNER_DIR",
    "CONTAINER_SOCKET",
    "CONTAINER_SOCK_DIR",
    "RUNNER_DIR",
    "SERVICE_DEFS_DIR",
    "SOCKET_NAME",
    "WORKER_EXIT",
    "BatchExecFallback",
    "ExecInContainer",
    "ReadySignal",
    "RunnerClient",
    "next_result",
]

RUNNER_DIR = Path(__file__).resolve().parent / "kernel_side"  # stdlib only, mounted into kernels
CONTAINER_RUNNER_DIR = str(RUNNER)  # the kernel layout is the storage subsystem's
CONTAINER_IPC_DIR = "/home/config/ipc"
CONTAINER_SOCK_DIR = "/home/config/sock"
CONTAINER_SOCKET = f"{CONTAINER_SOCK_DIR}/{SOCKET_NAME}"
SERVICE_DEFS_DIR = "/etc/backend.ai/service-defs"

