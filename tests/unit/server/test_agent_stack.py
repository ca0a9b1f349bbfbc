"""The agent's one exit stack: a step failing half-way through startup releases every part
started before it, in reverse order, and the exception reaches the caller."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from berth.backend import FakeBackend
from berth.config import AgentConfig, load_config
from berth.daemon import Agent
from berth.events import ManagerLink
from berth.kernel import KernelLifecycle
from berth.tasks import TaskSupervisor
from berth.telemetry import Telemetry


def config(root: Path) -> AgentConfig:
    (root / "vfolders").mkdir(parents=True)
    return load_config(env={}, overrides={
        "agent.id": "ag-stack", "agent.rpc-allow-plain": True,
        "agent.rpc-listen-addr": "127.0.0.1:0", "agent.internal-addr": "127.0.0.1:0",
        "agent.var-base-path": str(root / "var"), "agent.ipc-base-path": str(root / "ipc"),
        "agent.image-commit-path": str(root / "commit"),
        "container.scratch-root": str(root / "scratch"),
        "container.vfolder-allowed-roots": [str(root / "vfolders")],
        "resource.reserved-cpu": 0, "resource.reserved-mem": "0",
    })


async def test_a_failed_step_releases_what_started_in_reverse_order(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    released: list[str] = []

    def recording(name: str, cls: type, method: str = "close") -> None:
        real = getattr(cls, method)

        async def close(self: Any, *args: Any, **kw: Any) -> None:
            released.append(name)
            await real(self, *args, **kw)
        monkeypatch.setattr(cls, method, close)

    recording("backend", FakeBackend)
    recording("lifecycle", KernelLifecycle)
    recording("link", ManagerLink)
    recording("telemetry", Telemetry)
    recording("tasks", TaskSupervisor)

    async def announce_fails(self: Agent, link: ManagerLink) -> None:
        raise RuntimeError("announce failed")
    monkeypatch.setattr(Agent, "_announce", announce_fails)

    backend = FakeBackend()
    agent = Agent(config(tmp_path), backend=backend)
    with pytest.raises(RuntimeError, match="announce failed"):
        await agent.startup()

    assert not agent.ready
    # Everything before the announce was started, and is released last-started first.
    assert [n for n in released if n != "tasks"] == ["telemetry", "link", "lifecycle", "backend"]
    assert released.index("tasks") < released.index("telemetry")
    assert backend.closed
    # A shutdown after the failed startup has nothing left to release.
    released.clear()
    await agent.shutdown()
    assert released == []


async def test_a_failure_before_anything_started_releases_the_backend_only(
        tmp_path: Path) -> None:
    backend = FakeBackend()
    agent = Agent(config(tmp_path), backend=backend)

    async def dead() -> bool:
        return False
    backend.ping = dead  # type: ignore[method-assign]
    with pytest.raises(Exception, match="does not answer"):
        await agent.startup()
    assert backend.closed
