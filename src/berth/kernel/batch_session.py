"""A batch session's one job: run the startup command, report success or failure as events.

Backend.AI's manager calls ``trigger_batch_execution`` and waits for ``session_success`` /
``session_failure``; the job follows the run with ``continue`` until it finishes, under the
session's time limit.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import Any, Protocol

from berth.errors import BerthError
from berth.events import (
    AgentEvent,
    ExecutionFinishedEvent,
    ExecutionStartedEvent,
    ExecutionTimeoutEvent,
    SessionFailureEvent,
    SessionSuccessEvent,
)
from berth.types import TerminationReason

__all__ = ["BATCH_RUN_ID", "Executor", "run_batch_job"]

log = logging.getLogger(__name__)

BATCH_RUN_ID = "batch-job"
_DONE = ("finished", "exec-timeout")


class Executor(Protocol):
    async def execute(self, run_id: str | None, mode: str, code: str,
                      opts: dict[str, Any] | None = None, flush_timeout: float | None = None,
                      api_version: int = 2) -> dict[str, Any]: ...


async def run_batch_job(runner: Executor, session_id: str, command: str,
                        timeout: float | None, emit: Callable[[AgentEvent], None]) -> int:
    """Run ``command`` as the batch ``exec`` step; return its exit code (-2 on time-out, -1
    when the kernel or its runner went away first: ``session_failure`` with ``task-failed``)."""
    emit(ExecutionStartedEvent(session_id=session_id))
    try:
        async with asyncio.timeout(timeout):
            result = await runner.execute(BATCH_RUN_ID, "batch", command, {"exec": command},
                                          1.0, 3)
            while result["status"] not in _DONE:
                result = await runner.execute(BATCH_RUN_ID, "continue", "", {}, 1.0, 3)
    except TimeoutError:
        result = {"status": "exec-timeout"}
    except BerthError as exc:  # the kernel went away under the job (destroyed, its runner died)
        log.warning("batch session %s: its job ended without a result: %s", session_id, exc)
        emit(SessionFailureEvent(session_id=session_id,
                                 reason=str(TerminationReason.TASK_FAILED), exit_code=-1))
        return -1
    if result["status"] == "exec-timeout":
        emit(ExecutionTimeoutEvent(session_id=session_id))
        emit(SessionFailureEvent(session_id=session_id,
                                 reason=str(TerminationReason.TASK_TIMEOUT), exit_code=-2))
        return -2
    code = int(result.get("exitCode") or 0)
    emit(ExecutionFinishedEvent(session_id=session_id))
    if code == 0:
        emit(SessionSuccessEvent(session_id=session_id,
                                 reason=str(TerminationReason.TASK_FINISHED), exit_code=0))
    else:
        emit(SessionFailureEvent(session_id=session_id,
                                 reason=str(TerminationReason.TASK_FAILED), exit_code=code))
    log.info("batch session %s finished with exit code %d", session_id, code)
    return code
