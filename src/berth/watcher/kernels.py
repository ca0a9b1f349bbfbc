"""How many kernel containers this node's agent owns, asked of Docker (works while it is down)."""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable

from berth.backend import ContainerBackend
from berth.errors import BerthError
from berth.types import OWNER_LABEL

__all__ = ["KernelCounter", "docker_kernel_counter"]

log = logging.getLogger(__name__)

KernelCounter = Callable[[], Awaitable[dict[str, object]]]


def docker_kernel_counter(backend: ContainerBackend, agent_id: str) -> KernelCounter:
    """``{running, stopped, total}`` of the containers labelled as owned by ``agent_id``."""

    async def count() -> dict[str, object]:
        try:
            found = await backend.list({OWNER_LABEL: agent_id})
        except BerthError as exc:
            log.warning("watcher: cannot count kernels: %s", exc)
            return {"error": str(exc)}
        running = sum(1 for c in found if c.running)
        return {"running": running, "stopped": len(found) - running, "total": len(found)}

    return count
