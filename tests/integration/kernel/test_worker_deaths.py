"""The code worker (the runner's interpreter process that runs user code) killed for real: by
the memory cgroup's OOM killer, and by SIGBUS on a full ``/dev/shm``. Each is told to the
Manager as a warning ``agent_error``, counted on ``/metrics`` and logged naming the kernel;
the kernel stays RUNNING and the next run gets a fresh interpreter."""

from __future__ import annotations

import asyncio
import logging
import re
import uuid
from collections.abc import Mapping
from typing import Any

import pytest

from berth.daemon.agent import Agent
from berth.events import AgentErrorEvent
from berth.daemon.facade import AgentFacade
from berth.types import KernelState

from .conftest import PYTHON, create, http_get, kernel_config

OOM_CODE = "hog = b'x' * (512 << 20)\nprint('survived?')\n"
SHM_CODE = """
import mmap, os
fd = os.open('/dev/shm/fill', os.O_CREAT | os.O_RDWR)
os.ftruncate(fd, 64 << 20)
m = mmap.mmap(fd, 64 << 20)
for i in range(0, 64 << 20, 4096):
    m[i] = 1
print('survived?')
"""


class Recorder:
    """Keeps what the lifecycle emits, then hands it on to the agent's real sink."""

    def __init__(self, inner: Any) -> None:
        self.inner = inner
        self.events: list[tuple[str, dict[str, Any]]] = []

    def emit(self, name: str, payload: Mapping[str, Any], *, broadcast: bool = False) -> None:
        self.events.append((name, dict(payload)))
        self.inner.emit(name, payload, broadcast=broadcast)


@pytest.fixture
def recorder(agent: Agent) -> Recorder:
    rec = Recorder(agent.parts.lifecycle.events)
    agent.parts.lifecycle.events = rec
    return rec


async def worker_deaths(agent: Agent, reason: str) -> float:
    """The counter as a scrape of the agent's real /metrics endpoint shows it."""
    raw = await asyncio.to_thread(http_get, agent.parts.telemetry.server.port, "/metrics")
    body = raw.decode()
    labels = f'agent_id="{re.escape(agent.agent_id)}",reason="{reason}"'
    pattern = r"^berth_kernel_worker_deaths_total\{" + labels + r"\} (\S+)$"
    found = re.search(pattern, body, re.MULTILINE)
    return float(found.group(1)) if found else 0.0


async def run(facade: AgentFacade, kid: str, code: str) -> dict[str, Any]:
    return await facade.execute_code(kid, code)


def console_text(result: dict[str, Any]) -> str:
    return "".join(str(data) for _, data in result.get("console", []))


@pytest.mark.parametrize(("slots", "opts", "code", "reason", "signal_no", "words"), [
    ({"cpu": "1", "mem": "128m"}, {}, OOM_CODE, "oom-killed", 9, "out-of-memory"),
    ({"cpu": "1", "mem": "256m"}, {"shmem": "8m"}, SHM_CODE, "shm-exhausted", 7, "/dev/shm"),
], ids=["oom", "sigbus"])
async def test_worker_death_is_told_counted_and_logged(
        agent: Agent, facade: AgentFacade, recorder: Recorder, caplog: pytest.LogCaptureFixture,
        slots: dict[str, str], opts: dict[str, str], code: str, reason: str, signal_no: int,
        words: str) -> None:
    kid = str(uuid.uuid4())
    await create(facade, kernel_config(PYTHON, resource_slots=slots, resource_opts=opts),
                 kernel_id=kid)
    before = await worker_deaths(agent, reason)
    with caplog.at_level(logging.WARNING, logger="berth.kernel.lifecycle"):
        result = await run(facade, kid, code)
    assert result["status"] == "finished" and result["exitCode"] == -signal_no, result
    assert "survived?" not in console_text(result)
    assert "workerExit" not in result  # the agent's own field does not reach the Manager
    # one event the Manager can show the kernel's user
    errors = [p for n, p in recorder.events if n == "agent_error"]
    assert len(errors) == 1, recorder.events
    event = AgentErrorEvent.model_validate(errors[0])
    assert event.severity == "WARNING" and kid in event.message and words in event.message
    assert event.context_env == {"kernel_id": kid, "session_id": kid, "source": "code-worker",
                                 "reason": reason, "exit_code": str(-signal_no)}
    # a counter, and a log line naming the kernel
    assert await worker_deaths(agent, reason) == before + 1
    assert any(kid in r.getMessage() and r.levelno == logging.WARNING for r in caplog.records)
    # the kernel lives on, and the next run gets a new interpreter
    assert agent.registry.get(kid).state == KernelState.RUNNING
    again = await run(facade, kid, "print(6 * 7)")
    assert again["exitCode"] == 0 and "42" in console_text(again), again
    assert len([n for n, _ in recorder.events if n == "agent_error"]) == 1
    await facade.destroy_kernel(kid, kid)
