"""The operator CLI against a real agent and real containers: run, exec (input, Ctrl-C),
cp both ways, ls-files, a declared HTTP service reached on its host port, top."""

from __future__ import annotations

import json
import re
import signal
from pathlib import Path

from support.net import http_get

from .conftest import PYTHON_IMAGE, Agent


def test_run_prints_output_and_destroys_the_kernel(agent: Agent) -> None:
    before = set(agent.kernel_ids())
    res = agent.cli("kernel", "run", "--image", PYTHON_IMAGE, "--mem", "512m",
                    "import sys\nprint(6 * 7)\nprint('warn', file=sys.stderr)")
    assert res.returncode == 0, res.stderr
    assert res.stdout == "42\n" and "warn" in res.stderr and "destroyed" in res.stderr
    assert set(agent.kernel_ids()) == before

    res = agent.cli("kernel", "run", "--image", PYTHON_IMAGE, "--mem", "512m", "--batch",
                    "--build", "echo building", "--exec", "echo ran; exit 5")
    assert res.returncode == 5, res.stderr
    assert "building" in res.stdout and "ran" in res.stdout
    assert set(agent.kernel_ids()) == before


def test_exec_keeps_state_and_answers_input(agent: Agent, kernel_id: str) -> None:
    assert agent.cli("kernel", "exec", kernel_id, "x = 21").returncode == 0
    res = agent.cli("kernel", "exec", kernel_id, "v = input('v? ')\nprint(v * x)",
                    input="ab\n")
    assert res.returncode == 0, res.stderr
    assert res.stdout.endswith("ab" * 21 + "\n")


def test_ctrl_c_interrupts_the_kernel_and_state_survives(agent: Agent, kernel_id: str) -> None:
    assert agent.cli("kernel", "exec", kernel_id, "kept = 'yes'").returncode == 0
    proc = agent.popen("kernel", "exec", kernel_id,
                       "import time\nprint('looping', flush=True)\nwhile True: time.sleep(0.05)")
    try:
        assert proc.stdout is not None
        assert proc.stdout.readline() == "looping\n"
        proc.send_signal(signal.SIGINT)
        _out, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode != 0 and "detached" not in err, err  # the run ended, we followed it
    assert "interrupting" in err and "KeyboardInterrupt" in err
    res = agent.cli("kernel", "exec", kernel_id, "print(kept)")
    assert (res.returncode, res.stdout) == (0, "yes\n")


def test_cp_both_ways_and_ls_files(agent: Agent, kernel_id: str, tmp_path: Path) -> None:
    src = tmp_path / "bundle"
    (src / "sub").mkdir(parents=True)
    payload = bytes(range(256)) * 4096
    (src / "data.bin").write_bytes(payload)
    (src / "sub" / "note.txt").write_text("hello from the host\n")
    res = agent.cli("kernel", "cp", str(src), f"{kernel_id}:/home/work/")
    assert res.returncode == 0, res.stderr

    res = agent.cli("kernel", "ls-files", kernel_id, "/home/work/bundle", "--json")
    assert res.returncode == 0, res.stderr
    sizes = {e["filename"]: e["size"] for e in json.loads(res.stdout)}
    assert sizes["data.bin"] == len(payload) and "sub" in sizes
    table = agent.cli("kernel", "ls-files", kernel_id, "bundle/sub")
    assert "note.txt" in table.stdout

    seen = agent.cli("kernel", "exec", kernel_id,
                     "print(open('/home/work/bundle/sub/note.txt').read(), end='')")
    assert seen.stdout == "hello from the host\n"
    back = tmp_path / "back"
    back.mkdir()
    res = agent.cli("kernel", "cp", f"{kernel_id}:/home/work/bundle", str(back))
    assert res.returncode == 0, res.stderr
    assert (back / "bundle" / "data.bin").read_bytes() == payload
    assert (back / "bundle" / "sub" / "note.txt").read_text() == "hello from the host\n"

    refused = agent.cli("kernel", "cp", f"{kernel_id}:/etc/passwd", str(back))
    assert refused.returncode != 0 and not (back / "passwd").exists()


def test_service_start_reaches_http_on_the_host_port(agent: Agent, kernel_id: str,
                                                     tmp_path: Path) -> None:
    page = tmp_path / "page.txt"
    page.write_text("served by berth\n")
    assert agent.cli("kernel", "cp", str(page), f"{kernel_id}:page.txt").returncode == 0
    res = agent.cli("kernel", "service", "start", kernel_id, "http-server")
    assert res.returncode == 0, res.stdout + res.stderr
    assert re.search(r"http-server: (started|running)", res.stdout)
    match = re.search(r"host port (\d+) -> container port 8080", res.stdout)
    assert match, res.stdout
    reply = http_get(int(match.group(1)), "/page.txt")
    assert reply.startswith(b"HTTP/1.") and reply.endswith(b"served by berth\n")
    res = agent.cli("kernel", "service", "stop", kernel_id, "http-server")
    assert res.returncode == 0, res.stderr


def test_top_renders_from_the_live_status(agent: Agent, kernel_id: str) -> None:
    res = agent.cli("kernel", "top")
    assert res.returncode == 0 and kernel_id[:6] in res.stdout, res.stderr
    res = agent.cli("kernel", "top", kernel_id, "--json")
    assert res.returncode == 0 and json.loads(res.stdout)["kernel_id"] == kernel_id
    res = agent.cli("agent", "top", "--watch", "0.2", "-n", "2")
    assert res.returncode == 0 and res.stdout.count("KERNEL") == 2, res.stderr
    assert agent.cli("kernel", "top", "no-such-kernel").returncode == 3


def test_exec_on_an_unknown_kernel_exits_3(agent: Agent) -> None:
    res = agent.cli("kernel", "exec", "no-such-kernel", "print(1)")
    assert res.returncode == 3 and "KernelNotFound" in res.stderr
