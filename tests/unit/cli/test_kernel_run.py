"""`berth kernel exec|run` through the real RPC path, in memory."""

from __future__ import annotations

import asyncio
import signal
import threading
from pathlib import Path
from typing import Any

import pytest
from support.served import ServedClient

from berth.cli.kernel_run import RunSpec, SigintCounter, console_writes, exit_code_of, follow_run

from .fakes import ExecAgent, calls, exec_agent, invoke, run_result


@pytest.fixture
def agent(tmp_path: Path) -> ExecAgent:
    return exec_agent(tmp_path)


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


def test_console_writes_and_exit_codes() -> None:
    assert console_writes({"console": [["stdout", "a"], ["stderr", "b"]]}) == [
        ("stdout", "a"), ("stderr", "b")]
    assert console_writes({"stdout": "a", "stderr": ""}) == [("stdout", "a")]
    assert exit_code_of({"status": "finished", "exitCode": 4}) == 4
    assert exit_code_of({"status": "finished", "exitCode": None}) == 0
    assert exit_code_of({"status": "exec-timeout", "exitCode": 0}) == 1


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
            return run_result(result["runId"], "finished", [["stderr", "KeyboardInterrupt\n"]], 1)
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
