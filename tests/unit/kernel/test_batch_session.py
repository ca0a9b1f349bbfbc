"""A batch session's job when its kernel goes away under it: a failure event, no traceback."""

from __future__ import annotations

import logging
from typing import Any

import pytest

from berth.errors import RunnerUnavailable
from berth.events import AgentEvent, SessionFailureEvent
from berth.kernel.batch_session import run_batch_job


class GoneRunner:
    """The runner answers the batch step, then its connection closes (the kernel destroyed)."""

    def __init__(self) -> None:
        self.calls = 0

    async def execute(self, run_id: str | None, mode: str, code: str,
                      opts: dict[str, Any] | None = None, flush_timeout: float | None = None,
                      api_version: int = 2) -> dict[str, Any]:
        self.calls += 1
        if self.calls == 1:
            return {"status": "continued"}
        raise RunnerUnavailable("runner closed the connection")


async def test_a_job_whose_kernel_went_away_ends_with_a_failure_event(
        caplog: pytest.LogCaptureFixture) -> None:
    events: list[AgentEvent] = []
    with caplog.at_level(logging.WARNING):
        code = await run_batch_job(GoneRunner(), "sess", "sleep 100", None, events.append)
    assert code == -1
    assert [type(e).__name__ for e in events] == ["ExecutionStartedEvent", "SessionFailureEvent"]
    failure = events[-1]
    assert isinstance(failure, SessionFailureEvent) and failure.reason == "task-failed"
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR]
