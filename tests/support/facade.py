"""An AgentFacade over the few collaborators a unit test has; any other one it touches fails
the test loudly (an ``Absent`` stand-in raises on every attribute)."""

from __future__ import annotations

from typing import Any

from berth.daemon.facade import AgentFacade
from berth.kernel import ExecRoutes, Reconciler

PARTS = ("config", "daemon", "backend", "registry", "lifecycle", "reconciler", "routes",
         "resources", "telemetry", "link", "images", "commits", "networks", "ports",
         "vfolder_hosts")


class Absent:
    def __init__(self, name: str) -> None:
        self._name = name

    def __getattr__(self, attr: str) -> Any:
        raise AssertionError(f"the facade used {self._name}.{attr}, which this test did not give")


def facade_over(agent_id: str, **parts: Any) -> AgentFacade:
    """With a lifecycle: its registry, a reconciler over it and exec routes (forgotten when a
    kernel is gone, as the agent wires them) unless given."""
    lifecycle = parts.get("lifecycle")
    if lifecycle is not None:
        parts.setdefault("registry", lifecycle.registry)
        parts.setdefault("reconciler", Reconciler(lifecycle, agent_id))
        parts.setdefault("routes", lifecycle.routes)
    unknown = set(parts) - set(PARTS)
    assert not unknown, f"no such facade collaborator: {unknown}"
    full = {name: parts.get(name, Absent(name)) for name in PARTS}
    return AgentFacade(agent_id=agent_id, **full)
