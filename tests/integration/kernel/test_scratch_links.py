"""A kernel cannot make the agent (root on the host) open or connect to a host path through its
scratch: a real agent process, real Docker, `berth/python:3.11`, kill -9 and adoption.

The "host socket" is a listening Unix socket of this test outside any scratch; it records every
connection. The kernel's code (run through `execute`) plants links to it and to a host file
wherever it can write, then the agent is killed and restarted (kernels adopted).
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import stat
import tempfile
import textwrap
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest
from support.procs import AgentProcess

from .conftest import PYTHON, kernel_config

KERNEL_UID = 9001  # container.kernel-uid's default


class HostSocket:
    """A listening socket on the host; counts connections and bytes, closes each at once."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.connections = 0
        self.received = b""
        self.server: asyncio.AbstractServer | None = None

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        try:
            self.received += await asyncio.wait_for(reader.read(65536), 1.0)
        except TimeoutError:
            pass
        writer.close()

    async def start(self) -> None:
        self.server = await asyncio.start_unix_server(self._serve, path=str(self.path))
        os.chmod(self.path, 0o777)


@pytest.fixture
def host_dir() -> Iterator[Path]:
    d = Path(tempfile.mkdtemp(prefix="berth-host-"))  # short: sun_path is 108 bytes
    os.chmod(d, 0o755)
    (d / "file").write_text("host file\n")
    os.chmod(d / "file", 0o666)
    try:
        yield d
    finally:
        shutil.rmtree(d, ignore_errors=True)


@pytest.fixture
async def host_socket(host_dir: Path) -> AsyncIterator[HostSocket]:
    sock = HostSocket(host_dir / "host.sock")
    await sock.start()
    try:
        yield sock
    finally:
        assert sock.server is not None
        sock.server.close()


def plant(host_dir: Path) -> str:
    """Kernel code: move the runner's socket aside and link host paths in its place and in
    every other name the agent touches; prints what each step did (errno names)."""
    return textwrap.dedent(f"""
        import errno, json, os
        def attempt(fn, *args):
            try:
                fn(*args)
                return "ok"
            except OSError as e:
                return errno.errorcode[e.errno]
        res = {{}}
        for d in ("/home/config/sock", "/home/config/ipc"):
            res[d + ":rename"] = attempt(os.rename, d + "/runner.sock", d + "/moved.sock")
            res[d + ":unlink"] = attempt(os.unlink, d + "/runner.sock")
            res[d + ":symlink"] = attempt(os.symlink, "{host_dir}/host.sock", d + "/runner.sock")
            res[d + ":link-elsewhere"] = attempt(os.symlink, "{host_dir}/host.sock", d + "/l")
            res[d + ":create"] = attempt(lambda p: open(p, "w").close(), d + "/new")
        for link in ("/home/config/ipc/bootstrap.exit", "/home/work/bootstrap.sh"):
            res[link] = attempt(os.symlink, "{host_dir}/file", link)
        res["work-dir-link"] = attempt(os.symlink, "{host_dir}", "/home/work/out")
        print(json.dumps(res))
    """)


async def run(c: Any, kid: str, code: str) -> dict[str, Any]:
    result: dict[str, Any] = await asyncio.wait_for(
        c.execute("sess", kid, 2, uuid.uuid4().hex, "query", code, {}, None), 60)
    return result


def stdout(result: dict[str, Any]) -> str:
    return "".join(d for k, d in result["console"] if k == "stdout")


def sock_dir(agent_proc: AgentProcess, kid: str) -> Path:
    return agent_proc.root / "scratch" / kid / "config" / "sock"


async def test_a_planted_link_never_leads_the_agent_to_a_host_socket(
        agent_proc: AgentProcess, host_socket: HostSocket, host_dir: Path) -> None:
    kid = str(uuid.uuid4())
    async with agent_proc.client() as c:
        await c.create_kernels("sess", [kid], [kernel_config(PYTHON)], {})
        await run(c, kid, "x = 41")
        planted = json.loads(stdout(await run(c, kid, plant(host_dir))))
    assert planted["/home/config/ipc:symlink"] == "ok", planted  # ipc/ stays writable
    agent_proc.kill9()
    await agent_proc.start()
    async with agent_proc.client() as c:
        try:
            again: dict[str, Any] | Exception = await run(c, kid, "print(x + 1)")
        except Exception as exc:  # noqa: BLE001 - judged below, after the host socket
            again = exc
        assert host_socket.connections == 0 and host_socket.received == b"", again
        assert not isinstance(again, Exception), again
        assert stdout(again) == "42\n"  # the adopted kernel's runner is reached safely
        # Its socket directory is the kernel user's no more: nothing can be swapped there.
        for step in ("rename", "unlink", "link-elsewhere", "create"):
            assert planted[f"/home/config/sock:{step}"] in ("EACCES", "EPERM"), planted
        await c.restart_kernel("sess", kid, None, {})  # unlinks ipc/bootstrap.exit, unseals
        after = await run(c, kid, "print('new container')")
        assert stdout(after) == "new container\n"
        assert stat.S_IMODE(os.stat(sock_dir(agent_proc, kid)).st_mode) == 0o755
        await c.destroy_kernel(kid, "sess")
    assert host_socket.connections == 0 and host_socket.received == b""
    assert (host_dir / "file").read_text() == "host file\n"  # never written, never removed
    assert sorted(os.listdir(host_dir)) == ["file", "host.sock"]
    assert not (agent_proc.root / "scratch" / kid).exists()


async def test_a_link_swapped_in_before_the_seal_is_refused_not_followed(
        agent_proc: AgentProcess, host_socket: HostSocket, host_dir: Path) -> None:
    """As if the agent died between the runner's bind and the seal: the socket directory is
    still the kernel user's, the kernel swaps a link in, the restarted agent must refuse it."""
    kid = str(uuid.uuid4())
    async with agent_proc.client() as c:
        await c.create_kernels("sess", [kid], [kernel_config(PYTHON)], {})
        await run(c, kid, "x = 1")
        agent_proc.kill9()
        os.chown(sock_dir(agent_proc, kid), KERNEL_UID, KERNEL_UID)  # unsealed again
        os.chmod(sock_dir(agent_proc, kid), 0o700)
        code = textwrap.dedent(f"""
            import os
            os.rename("/home/config/sock/runner.sock", "/home/config/sock/moved.sock")
            os.symlink("{host_dir}/host.sock", "/home/config/sock/runner.sock")
        """)
        exit_code, out = await asyncio.to_thread(_docker_exec, agent_proc.agent_id, kid, code)
        assert exit_code == 0, out
    await agent_proc.start()
    async with agent_proc.client() as c:
        with pytest.raises(Exception, match="symbolic link") as refused:
            await run(c, kid, "print('leaked')")
        assert "leaked" not in str(refused.value)
        mode = os.stat(sock_dir(agent_proc, kid))
        assert (mode.st_uid, stat.S_IMODE(mode.st_mode)) == (0, 0o755)  # sealed on adoption
        await c.destroy_kernel(kid, "sess")
    assert host_socket.connections == 0 and host_socket.received == b""


def _docker_exec(agent_id: str, kid: str, code: str) -> tuple[int, str]:
    """Run Python in the kernel's container as the kernel user (the agent is down)."""
    import subprocess

    from support.docker import containers

    [cid] = containers(agent_id, kid)
    proc = subprocess.run(["docker", "exec", "-u", f"{KERNEL_UID}:{KERNEL_UID}", cid,
                           "/usr/bin/python3", "-c", code], capture_output=True, text=True,
                          timeout=60, check=False)
    return proc.returncode, proc.stdout + proc.stderr
