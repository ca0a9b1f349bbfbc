"""`berth kernel exec|run|cp|ls-files|service` through the real RPC path, in memory."""

from __future__ import annotations

import asyncio
import io
import json
import signal
import tarfile
import threading
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner, Result
from support.served import ServedClient

from berth.cli import CliState, cli
from berth.cli.kernel_exec import (
    Location,
    RunSpec,
    SigintCounter,
    UnsafeArchiveMember,
    console_writes,
    exit_code_of,
    extract_archive,
    follow_run,
    parse_location,
    service_lines,
)
from berth.errors import RunnerUnavailable
from berth.rpc.fake import FakeAgent
from berth.storage import KernelFiles, list_files_reply

SERVICE_PORTS = [{"name": "http-server", "protocol": "http", "container_ports": [8080],
                  "host_ports": [30123], "is_inference": False}]


def _result(run_id: str, status: str, console: list[Any] | None = None,
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
            return _result(run_id, "finished", [["stdout", f"got {code!r}\n"]], 0)
        if run["mode"] == "batch":
            return self._batch(run_id, run)
        return self._query(run_id, run)

    def _batch(self, run_id: str, run: dict[str, Any]) -> dict[str, Any]:
        build_code = 1 if run["opts"].get("build") == "false" else 0
        step = run["step"]
        if step == 1:
            return _result(run_id, "clean-finished", [], 0)
        if step == 2:
            return _result(run_id, "build-finished", [["stdout", "building\n"]], build_code)
        exec_code = int(run["opts"]["exec"].split()[-1])
        return _result(run_id, "finished", [["stdout", "ran\n"]],
                       127 if build_code else exec_code)

    def _query(self, run_id: str, run: dict[str, Any]) -> dict[str, Any]:
        code, step = run["code"], run["step"]
        if code.startswith("echo:"):
            return _result(run_id, "finished", [["stdout", code[5:]]], 0)
        if code.startswith("fail:"):
            return _result(run_id, "finished", [["stderr", "boom\n"]], int(code[5:]))
        if code in ("ask", "askpw"):
            return _result(run_id, "waiting-input", [["stdout", "name? "]], None,
                           {"is_password": code == "askpw"})
        if code == "chunks":
            status = "finished" if step == 4 else "continued"
            return _result(run_id, status, [["stdout", f"part{step}\n"]], 0)
        if code == "timeout":
            return _result(run_id, "exec-timeout" if step > 1 else "continued", [], None)
        if code == "media":
            return _result(run_id, "finished", [["media", ["image/png", "AAAA"]],
                                                ["html", "<b>x</b>"]], 0)
        return self._loop(run_id, code, step)

    def _loop(self, run_id: str, code: str, step: int) -> dict[str, Any]:
        if code == "loop" and self.interrupts:
            return _result(run_id, "finished", [["stderr", "KeyboardInterrupt\n"]], 1)
        if step == 3 or (code == "stubborn" and step == 6):
            signal.raise_signal(signal.SIGINT)
        if step > 50:
            raise AssertionError("the client never interrupted")
        return _result(run_id, "continued", [["stdout", "tick\n"]])

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


@pytest.fixture
def agent(tmp_path: Path) -> ExecAgent:
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


# ------------------------------------------------------------------ exec

def test_exec_prints_output_and_exits_with_the_runs_code(agent: ExecAgent) -> None:
    res = invoke(agent, "kernel", "exec", "k1", "echo:hello\n")
    assert res.exit_code == 0 and res.stdout == "hello\n"
    (call,) = calls(agent, "execute")
    assert (call["session_id"], call["mode"], call["api_version"]) == ("s1", "query", 2)
    res = invoke(agent, "kernel", "exec", "k1", "fail:3")
    assert res.exit_code == 3 and "boom" in res.stderr


def test_exec_follows_with_continue_on_the_same_run(agent: ExecAgent) -> None:
    res = invoke(agent, "kernel", "exec", "k1", "chunks")
    assert res.exit_code == 0 and res.stdout == "part1\npart2\npart3\npart4\n"
    run = calls(agent, "execute")
    assert [c["mode"] for c in run] == ["query", "continue", "continue", "continue"]
    assert len({c["run_id"] for c in run}) == 1
    assert all(c["flush_timeout"] == 0.5 for c in run)


def test_exec_answers_input_from_the_terminal(agent: ExecAgent) -> None:
    res = invoke(agent, "kernel", "exec", "k1", "ask", input="alice\n")
    assert res.exit_code == 0 and "got 'alice'" in res.stdout
    assert [c["mode"] for c in calls(agent, "execute")] == ["query", "input"]
    assert calls(agent, "execute")[1]["code"] == "alice"


def test_exec_reads_passwords_without_echo(agent: ExecAgent) -> None:
    res = invoke(agent, "kernel", "exec", "k1", "askpw", input="s3cret\n")
    assert res.exit_code == 0 and "got 's3cret'" in res.stdout
    assert res.stdout.count("s3cret") == 1  # only the kernel's own echo, not the terminal's


def test_ctrl_c_interrupts_once_and_keeps_following(agent: ExecAgent) -> None:
    res = invoke(agent, "kernel", "exec", "k1", "loop")
    assert res.exit_code == 1 and "KeyboardInterrupt" in res.stderr
    assert calls(agent, "interrupt_kernel") == [{"kernel_id": "k1"}]
    assert calls(agent, "execute")[-1]["mode"] == "continue"
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler


def test_second_ctrl_c_detaches(agent: ExecAgent) -> None:
    res = invoke(agent, "kernel", "exec", "k1", "stubborn")
    assert res.exit_code == 130 and "detached" in res.stderr
    assert len(calls(agent, "interrupt_kernel")) == 1


def test_exec_timeout_and_media(agent: ExecAgent) -> None:
    res = invoke(agent, "kernel", "exec", "k1", "timeout")
    assert res.exit_code == 1 and "exec-timeout" in res.stderr
    res = invoke(agent, "kernel", "exec", "k1", "media", "--time-limit", "5")
    assert "[media image/png: 4 chars]" in res.stdout and "[html: 8 chars]" in res.stdout
    assert calls(agent, "execute")[-1]["opts"] == {"exec_timeout": 5.0}


def test_batch_mode_reports_steps_and_exec_code(agent: ExecAgent) -> None:
    res = invoke(agent, "kernel", "exec", "k1", "--batch", "--build", "make", "--exec",
                 "exit 5")
    assert res.exit_code == 5 and "build finished with exit code 0" in res.stderr
    first = calls(agent, "execute")[0]
    assert first["mode"] == "batch" and first["opts"] == {"clean": "", "build": "make",
                                                          "exec": "exit 5"}
    res = invoke(agent, "kernel", "exec", "k1", "--batch", "--build", "false", "--exec",
                 "exit 0")
    assert res.exit_code == 127 and "build finished with exit code 1" in res.stderr


@pytest.mark.parametrize("args", [["k1"], ["k1", "x", "--batch", "--exec", "y"],
                                  ["k1", "--batch"], ["k1", "x", "--exec", "y"]])
def test_exec_usage_errors(agent: ExecAgent, args: list[str]) -> None:
    assert invoke(agent, "kernel", "exec", *args).exit_code == 2
    assert calls(agent, "execute") == []


def test_exec_on_unknown_kernel_exits_3(agent: ExecAgent) -> None:
    assert invoke(agent, "kernel", "exec", "nope", "echo:x").exit_code == 3


# ------------------------------------------------------------------ run

def test_run_creates_executes_and_destroys(agent: ExecAgent) -> None:
    res = invoke(agent, "kernel", "run", "--image", "berth/python:3.11", "--cpu", "2",
                 "--mem", "256m", "echo:hi\n")
    assert res.exit_code == 0 and res.stdout == "hi\n"
    (create,) = calls(agent, "create_kernels")
    new_id = create["kernel_ids"][0]
    assert create["configs"][0]["resource_slots"] == {"cpu": "2", "mem": str(256 * 2**20)}
    assert calls(agent, "destroy_kernel") == [{"kernel_id": new_id, "reason": "user-requested"}]
    assert set(agent.kernels) == {"k1"}


def test_run_destroys_on_error_and_on_ctrl_c(agent: ExecAgent) -> None:
    agent.raise_on_execute = True
    res = invoke(agent, "kernel", "run", "--image", "i", "echo:x")
    assert res.exit_code == 1 and "RunnerUnavailable" in res.stderr
    agent.raise_on_execute = False
    res = invoke(agent, "kernel", "run", "--image", "i", "stubborn")
    assert res.exit_code == 130
    assert len(calls(agent, "destroy_kernel")) == 2 and set(agent.kernels) == {"k1"}


# ------------------------------------------------------------------ cp / ls-files

def test_cp_upload_and_download_round_trip(agent: ExecAgent, tmp_path: Path) -> None:
    src = tmp_path / "src"
    (src / "sub").mkdir(parents=True)
    (src / "a.txt").write_text("A")
    (src / "sub" / "b.bin").write_bytes(bytes(range(256)))
    res = invoke(agent, "kernel", "cp", str(src), "k1:/home/work/")
    assert res.exit_code == 0, res.output
    assert (agent.work / "src" / "sub" / "b.bin").read_bytes() == bytes(range(256))
    res = invoke(agent, "kernel", "cp", str(src / "a.txt"), "k1:renamed.txt")
    assert res.exit_code == 0 and (agent.work / "renamed.txt").read_text() == "A"

    into = tmp_path / "into"
    into.mkdir()
    assert invoke(agent, "kernel", "cp", "k1:/home/work/src", str(into)).exit_code == 0
    assert (into / "src" / "sub" / "b.bin").read_bytes() == bytes(range(256))
    target = tmp_path / "copy.txt"
    assert invoke(agent, "kernel", "cp", "k1:renamed.txt", str(target)).exit_code == 0
    assert target.read_text() == "A"
    fresh = tmp_path / "fresh"
    assert invoke(agent, "kernel", "cp", "k1:src", str(fresh)).exit_code == 0
    assert (fresh / "a.txt").read_text() == "A"


def test_cp_needs_exactly_one_remote_side(agent: ExecAgent, tmp_path: Path) -> None:
    assert invoke(agent, "kernel", "cp", str(tmp_path), str(tmp_path)).exit_code == 2
    assert invoke(agent, "kernel", "cp", "k1:a", "k1:b").exit_code == 2


def _tar(*members: tuple[tarfile.TarInfo, bytes]) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        for info, data in members:
            info.size = len(data) if info.isfile() else 0
            tar.addfile(info, io.BytesIO(data) if info.isfile() else None)
    return buf.getvalue()


def _member(name: str, kind: bytes = tarfile.REGTYPE, link: str = "") -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.type, info.linkname = kind, link
    return info


EVIL = {
    "dotdot": [_member("../escaped.txt")],
    "absolute": [_member("/tmp/berth-absolute-escape.txt")],
    "symlink-out": [_member("d", tarfile.DIRTYPE), _member("d/l", tarfile.SYMTYPE, "../../x")],
    "symlink-abs": [_member("l", tarfile.SYMTYPE, "/etc")],
    "hardlink-out": [_member("h", tarfile.LNKTYPE, "../outside")],
    "device": [_member("dev", tarfile.CHRTYPE)],
}


@pytest.mark.parametrize("case", sorted(EVIL))
def test_download_refuses_escaping_members_and_writes_nothing(
        agent: ExecAgent, tmp_path: Path, case: str) -> None:
    dest = tmp_path / "dest"
    dest.mkdir()
    agent.tar_override = _tar((_member("ok.txt"), b"fine"), *[(m, b"evil") for m in EVIL[case]])
    res = invoke(agent, "kernel", "cp", "k1:whatever", str(dest))
    assert res.exit_code == 1 and "refused archive member" in res.stderr
    assert list(dest.iterdir()) == []
    assert not (tmp_path / "escaped.txt").exists()
    assert not Path("/tmp/berth-absolute-escape.txt").exists()


def test_extract_archive_keeps_inside_links(tmp_path: Path) -> None:
    data = _tar((_member("top", tarfile.DIRTYPE), b""), (_member("top/f"), b"x"),
                (_member("top/l", tarfile.SYMTYPE, "f"), b""))
    assert sorted(extract_archive(data, tmp_path)) == ["top", "top/f", "top/l"]
    assert (tmp_path / "top" / "l").read_text() == "x"
    with pytest.raises(UnsafeArchiveMember):
        extract_archive(_tar((_member("x/../../y"), b"")), tmp_path)


def test_ls_files_table_and_json(agent: ExecAgent) -> None:
    (agent.work / "notes.txt").write_text("12345")
    (agent.work / "dir").mkdir()
    res = invoke(agent, "kernel", "ls-files", "k1")
    assert res.exit_code == 0 and "notes.txt" in res.stdout and "drwx" in res.stdout
    rows = json.loads(invoke(agent, "kernel", "ls-files", "k1", "--json").stdout)
    assert {r["filename"]: r["size"] for r in rows}["notes.txt"] == 5
    assert invoke(agent, "kernel", "ls-files", "k1", "/etc").exit_code == 1


# ------------------------------------------------------------------ services

def test_service_start_prints_host_ports_and_stop(agent: ExecAgent) -> None:
    res = invoke(agent, "--addr", "tcp://10.1.2.3:6011", "kernel", "service", "start", "k1",
                 "http-server")
    assert res.exit_code == 0
    assert "http-server: started" in res.stdout and "http://10.1.2.3:30123/" in res.stdout
    out = json.loads(invoke(agent, "kernel", "service", "start", "k1", "http-server",
                            "--json").stdout)
    assert out == {"status": "started", "service": "http-server", "host_ports": [30123]}
    assert invoke(agent, "kernel", "service", "stop", "k1", "http-server").exit_code == 0
    assert calls(agent, "shutdown_service") == [{"kernel_id": "k1", "service": "http-server"}]
    agent.service_status = "failed"
    res = invoke(agent, "kernel", "service", "start", "k1", "http-server")
    assert res.exit_code == 1 and "port never opened" in res.stdout


def test_service_start_passes_envs_and_arguments(agent: ExecAgent) -> None:
    res = invoke(agent, "kernel", "service", "start", "k1", "http-server",
                 "--env", "JUPYTER_TOKEN=t0k=en", "--arg", "--ServerApp.base_url=/x/")
    assert res.exit_code == 0, res.output
    assert calls(agent, "start_service")[-1]["opts"] == {
        "envs": {"JUPYTER_TOKEN": "t0k=en"}, "arguments": {"--ServerApp.base_url": "/x/"}}
    invoke(agent, "kernel", "service", "start", "k1", "http-server")
    assert calls(agent, "start_service")[-1]["opts"] == {}
    res = invoke(agent, "kernel", "service", "start", "k1", "http-server", "--env", "NOEQUALS")
    assert res.exit_code == 2 and "KEY=VALUE" in res.output


# ------------------------------------------------------------------ pure parts

def test_parse_location() -> None:
    assert parse_location("k1:/home/work/a") == Location("/home/work/a", "k1")
    assert parse_location("k1:") == Location("/home/work", "k1")
    assert parse_location("./a:b") == Location("./a:b")
    assert parse_location("/x/y:z") == Location("/x/y:z")
    assert parse_location("plain") == Location("plain")


def test_console_writes_and_exit_codes() -> None:
    assert console_writes({"console": [["stdout", "a"], ["stderr", "b"]]}) == [
        ("stdout", "a"), ("stderr", "b")]
    assert console_writes({"stdout": "a", "stderr": ""}) == [("stdout", "a")]
    assert exit_code_of({"status": "finished", "exitCode": 4}) == 4
    assert exit_code_of({"status": "finished", "exitCode": None}) == 0
    assert exit_code_of({"status": "exec-timeout", "exitCode": 0}) == 1


def test_service_lines_without_declaration() -> None:
    assert service_lines("x", {"status": "started"}, [], "h") == ["x: started"]


class BlockingTerminal:
    def __init__(self) -> None:
        self.release = threading.Event()
        self.out: list[tuple[str, str]] = []

    def write(self, stream: str, text: str) -> None:
        self.out.append((stream, text))

    def read_input(self, is_password: bool) -> str | None:
        self.release.wait(10)
        return "late"


class InterruptingAgent(ExecAgent):
    sigint: SigintCounter | None = None

    async def execute(self, *args: Any, **kwargs: Any) -> dict[str, Any]:
        result = await super().execute(*args, **kwargs)
        if self.interrupts:
            return _result(result["runId"], "finished", [["stderr", "KeyboardInterrupt\n"]], 1)
        if result["status"] == "waiting-input":
            assert self.sigint is not None
            asyncio.get_running_loop().call_later(0.05, self.sigint.fire)
        return result


async def test_ctrl_c_while_waiting_for_input_interrupts(tmp_path: Path) -> None:
    agent = InterruptingAgent(tmp_path)
    agent._create("s1", "k1", {})
    term, sigint = BlockingTerminal(), SigintCounter()
    agent.sigint = sigint
    try:
        async with ServedClient(agent) as client:
            result = await follow_run(client, "s1", "k1", RunSpec("query", "ask"), term, sigint)
    finally:
        term.release.set()
    assert result["exitCode"] == 1 and agent.interrupts == 1
    assert [c["mode"] for c in calls(agent, "execute")] == ["query", "continue"]


def test_sigint_counter_off_the_main_thread_leaves_signals_alone() -> None:
    seen: list[int] = []

    async def body() -> None:
        with SigintCounter().installed() as sigint:
            sigint.fire()
            seen.append(sigint.count)

    worker = threading.Thread(target=lambda: asyncio.run(body()))
    worker.start()
    worker.join(10)
    assert seen == [1] and signal.getsignal(signal.SIGINT) is signal.default_int_handler
