"""Query mode against the real runner process (host Python, real Unix socket)."""

from __future__ import annotations

import asyncio
import time
from typing import Any

from berth.runner import RunnerClient


def text_of(result: dict[str, Any], kind: str = "stdout") -> str:
    return "".join(data for k, data in result["console"] if k == kind)


async def run_to_end(client: RunnerClient, run_id: str, code: str, mode: str = "query",
                     **kw: Any) -> dict[str, Any]:
    result = await client.execute(run_id, mode, code, flush_timeout=kw.pop("flush", 5.0), **kw)
    console = list(result["console"])
    while result["status"] == "continued":
        result = await client.execute(run_id, "continue", "", flush_timeout=5.0)
        console += result["console"]
    return {**result, "console": console}


async def test_variables_persist_across_query_calls(runner_client: RunnerClient) -> None:
    first = await run_to_end(runner_client, "r1", "x = 41\nprint('set')")
    second = await run_to_end(runner_client, "r2", "x + 1")
    assert first["status"] == "finished" and first["exitCode"] == 0
    assert text_of(first) == "set\n"
    assert text_of(second) == "42\n"


async def test_exception_reports_traceback_and_exit_code(runner_client: RunnerClient) -> None:
    result = await run_to_end(runner_client, "r1", "1/0")
    assert result["status"] == "finished"
    assert result["exitCode"] == 1
    assert "ZeroDivisionError" in text_of(result, "stderr")


async def test_api_version_1_shape(runner_client: RunnerClient) -> None:
    result = await runner_client.execute("r1", "query", "import sys\nprint('a')\nprint('b', file=sys.stderr)",
                                         flush_timeout=None, api_version=1)
    assert result["status"] == "finished"
    assert (result["stdout"], result["stderr"]) == ("a\n", "b\n")
    assert result["files"] == [] and "console" not in result


async def test_input_round_trip(runner_client: RunnerClient) -> None:
    code = "name = input('who? ')\nimport getpass\npw = getpass.getpass()\nprint('hi', name, len(pw))"
    result = await runner_client.execute("r1", "query", code, flush_timeout=5.0)
    assert result["status"] == "waiting-input"
    assert result["options"] == {"is_password": False}
    assert text_of(result) == "who? "
    result = await runner_client.execute("r1", "input", "ann", flush_timeout=5.0)
    assert result["status"] == "waiting-input"
    assert result["options"] == {"is_password": True}
    result = await runner_client.execute("r1", "input", "secret", flush_timeout=5.0)
    assert result["status"] == "finished"
    assert text_of(result).endswith("hi ann 6\n")


async def test_interrupt_stops_loop_and_state_survives(runner_client: RunnerClient) -> None:
    await run_to_end(runner_client, "r1", "kept = 'still here'")
    result = await runner_client.execute("r2", "query", "while True:\n    pass", flush_timeout=0.5)
    assert result["status"] == "continued"
    await runner_client.interrupt()
    result = await run_to_end(runner_client, "r2", "", "continue")
    assert result["status"] == "finished"
    assert "KeyboardInterrupt" in text_of(result, "stderr")
    after = await run_to_end(runner_client, "r3", "print(kept)")
    assert text_of(after) == "still here\n"


async def test_exec_timeout_reports_status_and_interpreter_survives(runner_client: RunnerClient) -> None:
    await run_to_end(runner_client, "r1", "y = 7")
    started = time.monotonic()
    result = await run_to_end(runner_client, "r2", "import time\nwhile True: time.sleep(0.05)",
                              opts={"exec_timeout": 0.5})
    assert result["status"] == "exec-timeout"
    assert time.monotonic() - started < 5
    assert text_of(await run_to_end(runner_client, "r3", "print(y)")) == "7\n"


async def test_flush_timeout_returns_partial_output(runner_client: RunnerClient) -> None:
    code = "import time\nprint('early', flush=True)\ntime.sleep(1.5)\nprint('late')"
    result = await runner_client.execute("r1", "query", code, flush_timeout=0.7)
    assert result["status"] == "continued"
    assert text_of(result) == "early\n"
    result = await run_to_end(runner_client, "r1", "", "continue")
    assert text_of(result) == "late\n"


async def test_runs_execute_in_submission_order(runner_client: RunnerClient) -> None:
    first = await runner_client.execute("r1", "query", "import time\ntime.sleep(0.5)\nz = 1",
                                        flush_timeout=0.1)
    assert first["status"] == "continued"
    second = await run_to_end(runner_client, "r2", "print(z)")
    assert text_of(second) == "1\n"


async def test_subprocess_output_is_captured(runner_client: RunnerClient) -> None:
    result = await run_to_end(runner_client, "r1", "import os\nos.system('echo from-shell')")
    assert "from-shell\n" in text_of(result)


async def test_html_and_media_records(runner_client: RunnerClient) -> None:
    code = "print('a')\ndisplay_html('<b>x</b>')\ndisplay_media('image/svg+xml', '<svg/>')\nprint('b')"
    result = await run_to_end(runner_client, "r1", code)
    assert result["console"] == [("stdout", "a\n"), ("html", "<b>x</b>"),
                                 ("media", ("image/svg+xml", "<svg/>")), ("stdout", "b\n")]


async def test_completion_from_worker_namespace(runner_client: RunnerClient) -> None:
    await run_to_end(runner_client, "r1", "my_long_variable = 1\nimport os")
    result = await runner_client.complete("print(my_lo", {})
    assert result["status"] == "finished"
    assert "my_long_variable" in result["suggestions"]
    result = await runner_client.complete("os.pa", {})
    assert "os.path" in result["suggestions"]


async def test_large_output_streams_with_bounded_runner_memory(
    runner_client: RunnerClient, start_runner: Any
) -> None:
    status = await runner_client.status()
    line = "x" * 1023 + "\n"
    code = f"import sys\nfor i in range(50 * 1024):\n    sys.stdout.write({line!r})"
    result = await runner_client.execute("big", "query", code, flush_timeout=5.0)
    received, peak_runner_kb = 0, 0
    while True:
        received += sum(len(d) for k, d in result["console"] if k == "stdout")
        peak_runner_kb = max(peak_runner_kb, _rss_kb(status["pid"]))
        if result["status"] != "continued":
            break
        result = await runner_client.execute("big", "continue", "", flush_timeout=5.0)
    assert result["status"] == "finished" and result["exitCode"] == 0
    assert received == 50 * 1024 * 1024
    assert peak_runner_kb < 120 * 1024, f"runner RSS peaked at {peak_runner_kb} kB"


def _rss_kb(pid: int) -> int:
    with open(f"/proc/{pid}/status") as f:
        for row in f:
            if row.startswith("VmRSS:"):
                return int(row.split()[1])
    return 0


async def test_second_client_reconnects_while_run_in_flight(runner_client: RunnerClient, kernel_dirs: Any) -> None:
    code = "import time\nfor i in range(3):\n    print(i, flush=True)\n    time.sleep(0.3)"
    first = await runner_client.execute("r1", "query", code, flush_timeout=0.1)
    await runner_client.close()  # the agent goes away mid-run
    async with RunnerClient(kernel_dirs.socket) as other:
        rest = await run_to_end(other, "r1", "", "continue")
        assert rest["status"] == "finished"
        seen = text_of(first) + text_of(rest)
        assert seen == "0\n1\n2\n"
        assert text_of(await run_to_end(other, "r2", "print(i)")) == "2\n"


async def test_client_reconnects_after_runner_side_drop(runner_client: RunnerClient) -> None:
    await run_to_end(runner_client, "r1", "v = 5")
    conn = runner_client._conn
    assert conn is not None
    conn._writer.close()
    await asyncio.sleep(0.1)
    assert text_of(await run_to_end(runner_client, "r2", "print(v)")) == "5\n"
