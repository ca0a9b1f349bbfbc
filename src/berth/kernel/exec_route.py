"""Where a kernel's code goes: its runner, or, in an image without an interpreter, batch
commands through ``docker exec``.

A fallback keeps the batch jobs it runs, so there is one per kernel (and container) for as long
as the kernel lives: :meth:`ExecRoutes.forget` is a lifecycle gone-hook.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from berth.backend import ContainerBackend
from berth.errors import KernelNotFound, RunnerUnavailable
from berth.kernel.container_config import has_runner
from berth.kernel.deps import RunnerRole
from berth.kernel.registry import Kernel
from berth.runner import BatchExecFallback, ExecInContainer
from berth.types import KernelId

__all__ = ["ExecRoutes"]


class ExecRoutes:
    def __init__(self, runners: Mapping[KernelId, RunnerRole], backend: ContainerBackend) -> None:
        self._runners = runners  # the lifecycle's: a kernel's runner while it is up
        self._backend = backend
        self._fallbacks: dict[str, tuple[str | None, BatchExecFallback]] = {}

    def runner(self, kernel: Kernel) -> Any:
        """The runner client (or the docker-exec fallback) that executes in ``kernel``."""
        runner = self._runners.get(kernel.kernel_id)
        if runner is not None:
            return runner
        if has_runner(kernel.image_labels):
            raise RunnerUnavailable(kernel_id=kernel.kernel_id)
        # No interpreter in the image: batch commands through docker exec; query mode raises
        # RuntimeMissing naming the runtime the image lacks.
        fallback = self._fallbacks.get(kernel.kernel_id)
        if fallback is None or fallback[0] != kernel.container_id:
            fallback = (kernel.container_id, BatchExecFallback(
                self._docker_exec(kernel),
                kernel.image_labels.get("ai.backend.runtime-path") or "python3"))
            self._fallbacks[kernel.kernel_id] = fallback
        return fallback[1]

    def forget(self, kernel_id: KernelId) -> None:
        """The kernel is gone: so is its exec fallback (and the batch jobs it tracked)."""
        self._fallbacks.pop(kernel_id, None)

    def __len__(self) -> int:
        return len(self._fallbacks)

    def _docker_exec(self, kernel: Kernel) -> ExecInContainer:
        backend, user = self._backend, f"{kernel.uid}:{kernel.gid}"

        async def run(cmd: list[str]) -> tuple[int, str, str]:
            if not kernel.container_id:
                raise KernelNotFound(kernel_id=kernel.kernel_id)
            # No env of its own: the exec inherits the container's, where the agent's values
            # already win over the spec's.
            res = await backend.exec(kernel.container_id, cmd, user=user)
            return (res.exit_code, res.stdout.decode(errors="replace"),
                    res.stderr.decode(errors="replace"))

        return run
