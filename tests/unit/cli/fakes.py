"""An in-memory agent for `berth kernel exec|run|cp|ls-files|service`: FakeAgent plus
scripted runs, services and files backed by a real KernelFiles; driven through the real RPC
path (ServedClient)."""

from __future__ import annotations

import signal
from pathlib import Path
from typing import Any

from click.testing import CliRunner, Result
from support.served import ServedClient

from berth.cli import CliState, cli
from berth.errors import RunnerUnavailable
from berth.rpc.fake import FakeAgent
from berth.storage import KernelFiles, list_files_reply

SERVICE_PORTS = [{"name": "http-server", "protocol": "http", "container_ports": [8080],
                  "host_ports": [30123], "is_inference": False}]


def run_result(run_id: str, status: str, console: list[Any] | None = None,
            exit_code: int | None = None, options: dict[str, Any] | None = None
            ) -> dict[str, Any]:
    return {"runId": run_id, "status": status, "exitCode": exit_code, "options": options,
            "files": [], "console": console or []}


class ExecAgent(FakeAgent):
    """FakeAgent plus scripted runs, services and files backed by a real KernelFiles.

    Query code is a tiny script: ``echo:TEXT``, ``fail:N``, ``ask`` / ``askpw``, ``chunks``,
    ``loop`` (ticks until interrupted; raises SIGINT itself once after two ticks),
    ``stubborn`` (ignores interrupts; raises SIGINT twice), ``timeout``, ``media``.
    """

    def __init__(self, work: Path) -> None:
        super().__init__()
        self.work = work
        self.runs: dict[str, dict[str, Any]] = {}
        self.interrupts = 0
        self.service_status = "started"
        self.tar_override: bytes | None = None
        self.raise_on_execute = False

    async def get_status(self, agent_id: str | None = None) -> dict[str, Any]:
        status = await super().get_status(agent_id)
        for kern in status["kernels"]:
            kern["service_ports"] = SERVICE_PORTS
        return status

    async def execute(self, session_id: str, kernel_id: str, api_version: int,
                      run_id: str | None, mode: str, code: str,
                      opts: dict[str, Any] | None = None, flush_timeout: float | None = None,
                      agent_id: str | None = None) -> dict[str, Any]:
        self._record("execute", session_id=session_id, kernel_id=kernel_id,
                     api_version=api_version, run_id=run_id, mode=mode, code=code,
                     opts=opts, flush_timeout=flush_timeout)
        self._get(kernel_id)
        if self.raise_on_execute:
            raise RunnerUnavailable(kernel_id=kernel_id)
        assert run_id is not None
        if mode in ("query", "batch"):
            self.runs[run_id] = {"code": code, "opts": opts or {}, "mode": mode, "step": 0}
        run = self.runs[run_id]
        run["step"] += 1
        if mode == "input":
            return run_result(run_id, "finished", [["stdout", f"got {code!r}\n"]], 0)
        if run["mode"] == "batch":
            return self._batch(run_id, run)
        return self._query(run_id, run)

    def _batch(self, run_id: str, run: dict[str, Any]) -> dict[str, Any]:
        build_code = 1 if run["opts"].get("build") == "false" else 0
        step = run["step"]
        if step == 1:
            return run_result(run_id, "clean-finished", [], 0)
        if step == 2:
            return run_result(run_id, "build-finished", [["stdout", "building\n"]], build_code)
        exec_code = int(run["opts"]["exec"].split()[-1])
        return run_result(run_id, "finished", [["stdout", "ran\n"]],
                       127 if build_code else exec_code)

    def _query(self, run_id: str, run: dict[str, Any]) -> dict[str, Any]:
        code, step = run["code"], run["step"]
        if code.startswith("echo:"):
            return run_result(run_id, "finished", [["stdout", code[5:]]], 0)
        if code.startswith("fail:"):
            return run_result(run_id, "finished", [["stderr", "boom\n"]], int(code[5:]))
        if code in ("ask", "askpw"):
            return run_result(run_id, "waiting-input", [["stdout", "name? "]], None,
                           {"is_password": code == "askpw"})
        if code == "chunks":
            status = "finished" if step == 4 else "continued"
            return run_result(run_id, status, [["stdout", f"part{step}\n"]], 0)
        if code == "timeout":
            return run_result(run_id, "exec-timeout" if step > 1 else "continued", [], None)
        if code == "media":
            return run_result(run_id, "finished", [["media", ["image/png", "AAAA"]],
                                                ["html", "<b>x</b>"]], 0)
        return self._loop(run_id, code, step)

    def _loop(self, run_id: str, code: str, step: int) -> dict[str, Any]:
        if code == "loop" and self.interrupts:
            return run_result(run_id, "finished", [["stderr", "KeyboardInterrupt\n"]], 1)
        if step == 3 or (code == "stubborn" and step == 6):
            signal.raise_signal(signal.SIGINT)
        if step > 50:
            raise AssertionError("the client never interrupted")
        return run_result(run_id, "continued", [["stdout", "tick\n"]])

    async def interrupt_kernel(self, kernel_id: str, agent_id: str | None = None
                               ) -> dict[str, str]:
        self._record("interrupt_kernel", kernel_id=kernel_id)
        self.interrupts += 1
        return {"status": "finished"}

    async def start_service(self, kernel_id: str, service: str,
                            opts: dict[str, Any] | None = None,
                            agent_id: str | None = None) -> dict[str, Any]:
        self._record("start_service", kernel_id=kernel_id, service=service, opts=opts)
        if self.service_status == "failed":
            return {"status": "failed", "error": "port never opened"}
        return {"status": self.service_status}

    async def shutdown_service(self, kernel_id: str, service: str,
                               agent_id: str | None = None) -> None:
        self._record("shutdown_service", kernel_id=kernel_id, service=service)

    def _files(self) -> KernelFiles:
        return KernelFiles(self.work)

    async def upload_file(self, kernel_id: str, filename: str, filedata: bytes,
                          agent_id: str | None = None) -> None:
        self._get(kernel_id)
        self._record("upload_file", filename=filename)
        await self._files().upload(filename, filedata)

    async def download_file(self, kernel_id: str, filepath: str,
                            agent_id: str | None = None) -> bytes:
        self._get(kernel_id)
        if self.tar_override is not None:
            return self.tar_override
        return await self._files().download_tar(filepath)

    async def list_files(self, kernel_id: str, path: str = "/home/work",
                         agent_id: str | None = None) -> dict[str, Any]:
        self._get(kernel_id)
        return list_files_reply(path, list(await self._files().list_files(path)))


def exec_agent(tmp_path: Path) -> ExecAgent:
    """An ExecAgent with kernel k1 (session s1) whose /home/work is ``tmp_path/work``."""
    work = tmp_path / "work"
    work.mkdir()
    fake = ExecAgent(work)
    fake._create("s1", "k1", {"image": {"canonical": "berth/python:3.11"}})
    return fake


def invoke(agent: FakeAgent, *args: str, input: str | None = None) -> Result:
    state = CliState(client_factory=lambda _s: ServedClient(agent))
    return CliRunner().invoke(cli, list(args), obj=state, input=input,
                              catch_exceptions=False)


def calls(agent: FakeAgent, method: str) -> list[dict[str, Any]]:
    return [args for name, args in agent.calls if name == method]
