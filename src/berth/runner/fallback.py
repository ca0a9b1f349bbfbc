"""Kernels whose image has no usable Python: batch commands through `docker exec`.

`BatchExecFallback` keeps `RunnerClient`'s `execute` shape. Each batch step runs to completion
inside one `execute`/`continue` call (docker exec returns the whole output at once), in the
order clean → build → exec with Backend.AI's statuses; query/input and completion raise
`RuntimeMissing` naming the interpreter the image lacks.
"""

from __future__ import annotations

import shlex
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

from berth.errors import RunnerError, RuntimeMissing
from berth.runner.kernel_side import protocol
from berth.runner.results import next_result

ExecInContainer = Callable[[list[str]], Awaitable[tuple[int, str, str]]]
BUILD_FAILED_EXIT = 127
_STEPS = (("clean", protocol.ST_CLEAN_FINISHED), ("build", protocol.ST_BUILD_FINISHED),
          ("exec", protocol.ST_FINISHED))


class _BatchJob:
    def __init__(self, opts: Mapping[str, Any]) -> None:
        self.commands = {step: str(opts.get(step) or "") for step, _ in _STEPS}
        self.next_step = 0
        self.build_ok = True


class BatchExecFallback:
    def __init__(self, exec_in_container: ExecInContainer, runtime_path: str,
                 workdir: str = "/home/work") -> None:
        self._exec = exec_in_container
        self.runtime_path = runtime_path
        self._workdir = workdir
        self._jobs: dict[str, _BatchJob] = {}

    def _missing(self, what: str) -> RuntimeMissing:
        return RuntimeMissing(
            f"{what} needs the image's interpreter {self.runtime_path!r}, which is missing or "
            "unusable; only batch mode works in this kernel",
            runtime_path=self.runtime_path, mode=what)

    async def execute(self, run_id: str | None, mode: str, code: str,
                      opts: Mapping[str, Any] | None = None, flush_timeout: float | None = None,
                      api_version: int = 2) -> dict[str, Any]:
        run_id = run_id or "batch-job"
        if mode == "batch":
            self._jobs[run_id] = _BatchJob(opts or {})
        elif mode != "continue":
            raise self._missing(f"{mode} mode")
        job = self._jobs.get(run_id)
        if job is None:
            raise RunnerError(f"no batch run {run_id}", run_id=run_id)
        reply = await self._next_step(run_id, job)
        return next_result(reply, api_version)

    async def _next_step(self, run_id: str, job: _BatchJob) -> dict[str, Any]:
        step, status = _STEPS[job.next_step]
        job.next_step += 1
        records: list[list[str]] = []
        if step == "exec" and not job.build_ok:
            code = BUILD_FAILED_EXIT
        else:
            code, records = await self._run(job.commands[step])
        if step == "build":
            job.build_ok = code == 0
        if status == protocol.ST_FINISHED:
            del self._jobs[run_id]
        return {"runId": run_id, "status": status, "exitCode": code, "options": None,
                "records": records}

    async def _run(self, command: str) -> tuple[int, list[list[str]]]:
        if not command.strip():
            return 0, []
        exit_code, out, err = await self._exec(
            ["/bin/sh", "-c", f"cd {shlex.quote(self._workdir)} && {command}"])
        records = [[kind, text] for kind, text in
                   ((protocol.REC_STDOUT, out), (protocol.REC_STDERR, err)) if text]
        return exit_code, records

    async def complete(self, text: str, opts: Mapping[str, Any] | None = None) -> dict[str, Any]:
        raise self._missing("code completion")

    async def interrupt(self) -> None:
        raise self._missing("interrupt")
