"""The runner inside a real container of `berth/python:3.11`, driven over its socket from the host.

The container is set up the way the agent does it: runner dir bind-mounted read-only at
/opt/berth/runner, `config/` read-only at /home/config with `config/ipc` and `config/sock` (the
runner's socket) read-write on top,
`work/` at /home/work, Docker's init, a non-root user. Everything is labelled berth.test=1.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import tempfile
import textwrap
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest

from berth.kernel.container_config import runner_command
from berth.runner import RUNNER_DIR, RunnerClient

IMAGE = "berth/python:3.11"
UID = 1000


def docker(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["docker", *args], capture_output=True, text=True, check=check, timeout=60)


@pytest.fixture(scope="module")
def image() -> str:
    if shutil.which("docker") is None or docker("version", check=False).returncode != 0:
        pytest.fail("dockerd is not reachable: the runner integration tests need it")
    if docker("image", "inspect", IMAGE, check=False).returncode != 0:
        pytest.fail(f"image {IMAGE} is missing: build it with scripts/build-images.sh (scripts/setup.sh)")
    return IMAGE


class Kernel:
    def __init__(self, root: Path, container: str) -> None:
        self.root = root
        self.container = container
        self.socket = root / "config" / "sock" / "runner.sock"


@pytest.fixture
def kernel(image: str) -> Iterator[Kernel]:
    root = Path(tempfile.mkdtemp(prefix="berth-rt-"))
    for sub in ("work", "config/ipc", "config/sock"):
        (root / sub).mkdir(parents=True)
    (root / "config" / "environ.txt").write_text("KERNEL_TAG=itest\n")
    (root / "work" / "bootstrap.sh").write_text("echo prepared > /home/work/prepared.txt\n")
    for sub in ("work", "config/ipc", "config/sock"):
        os.chown(root / sub, UID, UID)
    os.chown(root / "work" / "bootstrap.sh", UID, UID)
    name = f"berth-test-runner-{uuid.uuid4().hex[:8]}"
    cmd = runner_command({"ai.backend.runtime-path": "/usr/bin/python3"}, bootstrap=True)
    docker("run", "-d", "--init", "--name", name, "--label", "berth.test=1", "--user", f"{UID}:{UID}",
           "--network", "none",
           "-v", f"{RUNNER_DIR}:/opt/berth/runner:ro",
           "-v", f"{root / 'config'}:/home/config:ro",
           "-v", f"{root / 'config' / 'ipc'}:/home/config/ipc:rw",
           "-v", f"{root / 'config' / 'sock'}:/home/config/sock:rw",
           "-v", f"{root / 'work'}:/home/work:rw",
           image, *cmd)
    try:
        yield Kernel(root, name)
    finally:
        logs = docker("logs", name, check=False)
        docker("rm", "-f", name, check=False)
        sys.stderr.write(logs.stdout + logs.stderr)
        shutil.rmtree(root, ignore_errors=True)


@pytest.fixture
async def client(kernel: Kernel) -> AsyncIterator[RunnerClient]:
    async with RunnerClient(kernel.socket) as c:
        await c.wait_ready(time.monotonic() + 30)
        yield c


def out(result: dict[str, Any], kind: str = "stdout") -> str:
    return "".join(d for k, d in result["console"] if k == kind)


async def finish(c: RunnerClient, run_id: str, mode: str, code: str = "", **opts: Any) -> dict[str, Any]:
    result = await c.execute(run_id, mode, code, opts, flush_timeout=5.0)
    console = list(result["console"])
    while result["status"] == "continued":
        result = await c.execute(run_id, "continue", "", flush_timeout=5.0)
        console += result["console"]
    return {**result, "console": console}


async def test_query_state_input_interrupt_timeout(client: RunnerClient, kernel: Kernel) -> None:
    status = await client.status()
    assert status["ready"] and status["bootstrap_exit"] == 0 and status["python"].startswith("3.")
    assert (kernel.root / "work" / "prepared.txt").read_text() == "prepared\n"
    r = await finish(client, "q1", "query", "import os\nx = os.environ['KERNEL_TAG']\nprint(os.getuid(), os.getcwd())")
    assert out(r) == f"{UID} /home/work\n"
    assert out(await finish(client, "q2", "query", "x")) == "'itest'\n"
    r = await client.execute("q3", "query", "v = input('v? ')\nprint(v * 2)", flush_timeout=5)
    assert (r["status"], r["options"]) == ("waiting-input", {"is_password": False})
    assert out(await client.execute("q3", "input", "ab", flush_timeout=5)) == "abab\n"
    r = await client.execute("q4", "query", "while True: pass", flush_timeout=0.5)
    assert r["status"] == "continued"
    await client.interrupt()
    r = await finish(client, "q4", "continue")
    assert r["status"] == "finished" and "KeyboardInterrupt" in out(r, "stderr")
    r = await finish(client, "q5", "query", "import time\ntime.sleep(60)", exec_timeout=1)
    assert r["status"] == "exec-timeout"
    assert out(await finish(client, "q6", "query", "print(x)")) == "itest\n"


async def test_twenty_megabytes_arrive_intact(client: RunnerClient) -> None:
    code = "import sys\nfor i in range(20 * 1024):\n    sys.stdout.write('%07d' % i + 'y' * 1016 + '\\n')"
    r = await finish(client, "big", "query", code)
    text = out(r)
    assert r["status"] == "finished" and len(text) == 20 * 1024 * 1024
    lines = text.splitlines()
    assert [int(line[:7]) for line in lines] == list(range(20 * 1024))


async def test_batch_build_failure_and_exec_codes(client: RunnerClient) -> None:
    async def steps(opts: dict[str, str]) -> list[tuple[str, int]]:
        r = await client.execute("batch-job", "batch", "", opts, flush_timeout=10)
        seen = [(r["status"], r["exitCode"])]
        while r["status"] != "finished":
            r = await client.execute("batch-job", "continue", "", flush_timeout=10)
            seen.append((r["status"], r["exitCode"]))
        return seen

    assert await steps({"build": "exit 1", "exec": "echo never"}) == [
        ("clean-finished", 0), ("build-finished", 1), ("finished", 127)]
    assert await steps({"build": "true", "exec": "python3 -c 'raise SystemExit(5)'"}) == [
        ("clean-finished", 0), ("build-finished", 0), ("finished", 5)]


async def test_image_service_definition_answers_http(client: RunnerClient, kernel: Kernel) -> None:
    (kernel.root / "work" / "hello.txt").write_text("hi")
    assert await client.start_service("http-server", {}, [8080]) == {"status": "started"}
    probe = "import urllib.request\nprint(urllib.request.urlopen('http://127.0.0.1:8080/hello.txt').read().decode())"
    assert out(await finish(client, "svc", "query", probe)) == "hi\n"
    assert await client.start_service("http-server", {}, [8080]) == {"status": "running"}
    await client.shutdown_service("http-server")


CLIENT_SCRIPT = textwrap.dedent("""
    import asyncio, sys
    from berth.runner import RunnerClient
    async def main():
        c = RunnerClient(sys.argv[1])
        code = "import time\\ncount = 0\\nfor i in range(40):\\n    count += 1\\n    print(i, flush=True)\\n    time.sleep(0.05)"
        r = await c.execute("long", "query", code, {}, 0.2, 2)
        print(r["status"], flush=True)
        await asyncio.sleep(60)
    asyncio.run(main())
""")


async def test_runner_survives_agent_kill_9(kernel: Kernel) -> None:
    async with RunnerClient(kernel.socket) as c:
        await c.wait_ready(time.monotonic() + 30)
    # A separate process plays the agent, so that it can be killed -9 mid-run.
    agent = subprocess.Popen(  # noqa: ASYNC220
        [sys.executable, "-c", CLIENT_SCRIPT, str(kernel.socket)],
                             stdout=subprocess.PIPE, text=True)
    try:
        assert agent.stdout is not None
        assert agent.stdout.readline().strip() == "continued"
    finally:
        agent.send_signal(signal.SIGKILL)
        agent.wait()
        if agent.stdout is not None:
            agent.stdout.close()
    async with RunnerClient(kernel.socket) as c:
        r = await finish(c, "long", "continue")
        assert r["status"] == "finished"
        assert out(await finish(c, "after", "query", "print(count)")) == "40\n"
        assert (await c.status())["pid"] > 0
    assert docker("inspect", "-f", "{{.State.Running}}", kernel.container).stdout.strip() == "true"
