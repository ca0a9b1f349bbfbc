from __future__ import annotations

import asyncio
import json
from typing import Any, Self

import pytest
from click.testing import CliRunner, Result

import berth.cli.image as image_cli
from berth.backend.base import ImageInfo
from berth.cli.state import CliState
from berth.events.bgtask import BackgroundTaskManager
from berth.images.service import ImageService

from .test_images import FakeBackend, layer_events


@pytest.fixture
def backend(monkeypatch: pytest.MonkeyPatch) -> FakeBackend:
    be = FakeBackend()
    monkeypatch.setattr(image_cli, "open_backend", lambda: be)
    return be


class LocalAgent:
    """The two RPCs ``image pull`` uses, answered by a real ImageService over ``backend``."""

    def __init__(self, backend: FakeBackend) -> None:
        self.tasks = BackgroundTaskManager(_Null(), progress_interval=0.0)
        self.images = ImageService(backend, self.tasks, _Null())
        self.calls: list[str] = []

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(self, *exc: object) -> None:
        return None

    async def check_and_pull(self, configs: dict[str, Any]) -> dict[str, str]:
        self.calls.append("check_and_pull")
        return await self.images.check_and_pull(configs)

    async def get_status(self) -> dict[str, Any]:
        self.calls.append("get_status")
        await asyncio.sleep(0.01)
        return {"bgtasks": self.tasks.snapshot()}


class _Null:
    def emit(self, event: object, *, coalesce: bool = False) -> None:
        return None


def pull(backend: FakeBackend, *args: str) -> tuple[Result, LocalAgent]:
    agent = LocalAgent(backend)
    state = CliState(client_factory=lambda _s: agent)  # type: ignore[arg-type, return-value]
    res = CliRunner().invoke(image_cli.image_group, ["pull", "-q", *args], obj=state)
    return res, agent


def test_pull_goes_through_the_agent_and_follows_its_task(backend: FakeBackend) -> None:
    backend.remote["reg/x:1"] = ("sha256:x", layer_events(1000, 5))
    res, agent = pull(backend, "reg/x:1")
    assert res.exit_code == 0, res.output
    assert "pulled reg/x:1" in res.output and "reg/x:1" in backend.images
    assert backend.pulls == [("reg/x:1", None)]
    assert agent.calls[0] == "check_and_pull" and "get_status" in agent.calls
    (record,) = agent.tasks.snapshot().values()
    assert record["status"] == "done" and record["total"] > 0


def test_pull_passes_credentials(backend: FakeBackend) -> None:
    backend.remote["reg/x:1"] = ("sha256:x", layer_events(10, 1))
    res, _ = pull(backend, "--username", "u", "--password", "p", "reg/x:1")
    assert res.exit_code == 0, res.output
    assert backend.pulls[0][1] == {"username": "u", "password": "p", "serveraddress": "reg"}


def test_pull_of_missing_tag_fails_with_reason(backend: FakeBackend) -> None:
    res, _ = pull(backend, "reg/none:1")
    assert res.exit_code == 1 and "not found" in res.output


def test_present_image_with_tag_policy_is_up_to_date(backend: FakeBackend) -> None:
    backend.images["reg/x:1"] = ImageInfo("sha256:x", ("reg/x:1",), {})
    res, agent = pull(backend, "reg/x:1")
    assert res.exit_code == 0 and "up to date" in res.output and backend.pulls == []
    assert agent.calls == ["check_and_pull"]


def test_ls_json(backend: FakeBackend) -> None:
    backend.images["k:1"] = ImageInfo("sha256:1", ("k:1",), {"ai.backend.kernelspec": "1"})
    backend.images["o:1"] = ImageInfo("sha256:2", ("o:1",), {})
    res = CliRunner().invoke(image_cli.image_group, ["ls", "--json"])
    assert json.loads(res.output) == [{"canonical": "k:1", "digest": "sha256:1",
                                       "architecture": ""}]
    res = CliRunner().invoke(image_cli.image_group, ["ls", "-a"])
    assert "o:1" in res.output
