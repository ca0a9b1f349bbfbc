"""Batch mode, bootstrap, environment and services against the real runner process."""

from __future__ import annotations

import asyncio
import json
import os
import time
from typing import Any

import pytest

from berth.errors import RunnerError, RunnerUnavailable
from berth.runner import RunnerClient
from support.procs import free_port


async def batch_steps(client: RunnerClient, opts: dict[str, str]) -> list[dict[str, Any]]:
    results = [await client.execute("batch-job", "batch", "", opts, flush_timeout=10.0)]
    while results[-1]["status"] not in ("finished", "exec-timeout"):
        results.append(await client.execute("batch-job", "continue", "", flush_timeout=10.0))
    return results


def stdout(result: dict[str, Any]) -> str:
    return "".join(d for k, d in result["console"] if k == "stdout")


async def test_batch_steps_report_each_exit_code(runner_client: RunnerClient) -> None:
    steps = await batch_steps(runner_client, {"clean": "echo cleaning", "build": "true",
                                              "exec": "echo run; exit 3"})
    assert [(s["status"], s["exitCode"]) for s in steps] == [
        ("clean-finished", 0), ("build-finished", 0), ("finished", 3)]
    assert stdout(steps[0]) == "cleaning\n"
    assert stdout(steps[2]) == "run\n"


async def test_failed_build_skips_exec_with_127(runner_client: RunnerClient, kernel_dirs: Any) -> None:
    steps = await batch_steps(runner_client, {"build": "echo broken >&2; exit 2",
                                              "exec": "touch ran"})
    assert [(s["status"], s["exitCode"]) for s in steps] == [
        ("clean-finished", 0), ("build-finished", 2), ("finished", 127)]
    assert not (kernel_dirs.work / "ran").exists()


async def test_batch_runs_in_work_dir_with_batch_env(runner_client: RunnerClient, kernel_dirs: Any) -> None:
    steps = await batch_steps(runner_client, {"exec": "pwd; echo $_BACKEND_BATCH_MODE $HOME"})
    lines = stdout(steps[-1]).splitlines()
    assert lines[0].endswith("/work")
    assert lines[1] == f"1 {kernel_dirs.work}"


async def test_batch_exec_timeout(runner_client: RunnerClient) -> None:
    started = time.monotonic()
    result = await runner_client.execute("batch-job", "batch", "",
                                         {"exec": "sleep 30", "exec_timeout": 0.5}, flush_timeout=10.0)
    while result["status"] not in ("finished", "exec-timeout"):
        result = await runner_client.execute("batch-job", "continue", "", flush_timeout=10.0)
    assert result["status"] == "exec-timeout"
    assert time.monotonic() - started < 8


async def test_bootstrap_runs_before_ready(start_runner: Any, kernel_dirs: Any) -> None:
    (kernel_dirs.work / "bootstrap.sh").write_text("sleep 1\necho boot > booted.txt\necho log-line\n")
    start_runner(bootstrap=True)
    async with RunnerClient(kernel_dirs.socket) as client:
        with pytest.raises(RunnerUnavailable):
            await client.wait_ready(time.monotonic() + 0.3)
        status = await client.wait_ready(time.monotonic() + 20)
        assert status["bootstrap_exit"] == 0
        assert (kernel_dirs.work / "booted.txt").read_text() == "boot\n"
        assert (kernel_dirs.ipc / "bootstrap.log").read_text() == "log-line\n"
        result = await client.execute("r", "query", "print(open('booted.txt').read())", flush_timeout=5)
        assert stdout(result) == "boot\n\n"


async def test_environ_txt_reaches_user_code(start_runner: Any, kernel_dirs: Any) -> None:
    (kernel_dirs.config / "environ.txt").write_text("# comment\nGREETING=hello=world\n\nLANG=en_US.UTF-8\n")
    start_runner()
    async with RunnerClient(kernel_dirs.socket) as client:
        await client.wait_ready(time.monotonic() + 20)
        code = "import os\nprint(os.environ['GREETING'], os.environ['LANG'], os.environ['HOME'])"
        result = await client.execute("r", "query", code, flush_timeout=5)
    assert stdout(result) == f"hello=world en_US.UTF-8 {kernel_dirs.work}\n"


def write_http_service(kernel_dirs: Any) -> None:
    definition = {
        "prestart_actions": [
            {"action": "write_tempfile", "args": {"body": ["hello from {ports[0]}"]}, "ref": "page"},
        ],
        "command": ["{runtime_path}", "-c",
                    ("import http.server, os, sys\n"
                    "body = open(sys.argv[1], 'rb').read()\n"
                    "class H(http.server.BaseHTTPRequestHandler):\n"
                    "    def do_GET(self):\n"
                    "        self.send_response(200); self.end_headers()\n"
                    "        self.wfile.write(body + os.environ['SVC_TAG'].encode())\n"
                    "http.server.HTTPServer(('127.0.0.1', int(sys.argv[2])), H).serve_forever()"),
                    "{page}", "{ports[0]}"],
        "env": {"SVC_TAG": "tag-${{ ports[0] }}"},
        "allowed_envs": ["EXTRA"],
    }
    (kernel_dirs.defs / "web.json").write_text(json.dumps(definition))


async def http_get(port: int) -> bytes:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(b"GET / HTTP/1.0\r\n\r\n")
    data = await reader.read()
    writer.close()
    return data


async def test_service_definition_starts_and_is_reachable(runner_client: RunnerClient, kernel_dirs: Any) -> None:
    write_http_service(kernel_dirs)
    port = free_port()
    assert await runner_client.start_service("web", {}, [port]) == {"status": "started"}
    assert await runner_client.start_service("web", {}, [port]) == {"status": "running"}
    body = await http_get(port)
    assert body.endswith(f"hello from {port}\ntag-{port}".encode())
    await runner_client.shutdown_service("web")
    with pytest.raises(OSError):
        await http_get(port)


async def test_service_failures_are_reported(runner_client: RunnerClient, kernel_dirs: Any) -> None:
    write_http_service(kernel_dirs)
    missing = await runner_client.start_service("nope", {}, [free_port()])
    assert missing["status"] == "failed" and "no service definition" in missing["error"]
    refused = await runner_client.start_service("web", {"envs": {"PATH": "/evil"}}, [free_port()])
    assert refused["status"] == "failed" and "not allowed" in refused["error"]
    for opts in ({"arguments": "x"}, {"arguments": ["x"]}, {"envs": "A=1"}):  # answered at once
        bad = await runner_client.start_service("web", opts, [free_port()], timeout=5)
        assert bad["status"] == "failed" and "must be an object" in bad["error"], (opts, bad)
    (kernel_dirs.defs / "dies.json").write_text(json.dumps({"command": ["false"]}))
    dies = await runner_client.start_service("dies", {}, [free_port()], timeout=5)
    assert dies["status"] == "failed" and "exited" in dies["error"]


async def test_preopen_is_started_without_spawning(runner_client: RunnerClient) -> None:
    assert await runner_client.start_service("8888", {}, [8888], protocol_name="preopen") == {
        "status": "started"}


async def test_unknown_run_is_a_runner_error(runner_client: RunnerClient) -> None:
    with pytest.raises(RunnerError):
        await runner_client.execute("never-started", "continue", "", flush_timeout=1)


async def test_client_without_runner_is_unavailable(kernel_dirs: Any) -> None:
    async with RunnerClient(kernel_dirs.socket, connect_timeout=0.5) as client:
        with pytest.raises(RunnerUnavailable):
            await client.status()
        with pytest.raises(RunnerUnavailable):
            await client.wait_ready(time.monotonic() + 0.3)


def test_write_tempfile_makes_a_python_config_file() -> None:
    # Jupyter's --config=FILE is loaded by its extension: the tempfile must end in .py.
    from berth.runner.kernel_side import servicedefs, services
    action = servicedefs.PrestartAction("write_tempfile", {"body": ["c.A.b = 1"]}, "cfg")
    path = services.run_action(action, {}, "/")
    try:
        assert path.endswith(".py")
        with open(path) as f:
            assert f.read() == "c.A.b = 1\n"
        assert os.stat(path).st_mode & 0o777 == 0o600
    finally:
        os.unlink(path)
