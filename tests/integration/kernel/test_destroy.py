"""Destroy on the real engine: one forced removal (`docker rm -f`) that still gives the exit
code and the container's output, read from its json-file log after the container is gone."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from support.docker import OWNER, docker

from berth.backend.docker import DockerBackend
from berth.errors import ContainerNotFound

from .conftest import BUSYBOX, RUN_LABEL

# "done" ends both streams: the engine copies stdout and stderr separately, so either may lag,
# and whichever is copied last, the log ends with "done" (with a 4k max-size the other stream's
# "done" can already be rotated away).
SCRIPT = "i=0; while [ $i -lt 300 ]; do echo out-$i; echo err-$i >&2; i=$((i+1)); done; " \
         "echo done; echo done >&2; exec sleep 1000"


@pytest.fixture
async def backend() -> AsyncIterator[DockerBackend]:
    be = DockerBackend()
    try:
        yield be
    finally:
        await be.close()


async def started(be: DockerBackend, name: str, script: str = SCRIPT,
                  max_size: str = "10m") -> str:
    cid = await be.create(f"{RUN_LABEL}-{name}", {
        "Image": BUSYBOX, "Cmd": ["sh", "-c", script],
        "Labels": {"berth.test": "1", OWNER: f"{RUN_LABEL}-destroy"},
        "HostConfig": {"Init": True, "LogConfig": {
            "Type": "json-file", "Config": {"max-size": max_size, "max-file": "2"}}},
    })
    await be.start(cid)
    # Until the script's output is all in the log: it ends with "done" and has stopped growing
    # over three polls.
    previous, stable = None, 0
    for _ in range(600):
        out = await be.logs(cid, tail=700)
        stable = stable + 1 if out == previous and out.endswith("done\n") else 0
        if stable >= 3:
            return cid
        previous = out
        await asyncio.sleep(0.1)
    await be.kill_and_remove(cid)
    raise AssertionError("the container never printed its output")


@pytest.mark.parametrize("max_size", ["10m", "4k"])  # 4k: the tail spans the rotated file
async def test_kill_and_remove_gives_the_exit_code_and_the_same_output_as_docker_logs(
        backend: DockerBackend, max_size: str) -> None:
    cid = await started(backend, f"rmf-{max_size}", max_size=max_size)
    expected = await backend.logs(cid, tail=120)
    log_dir = Path(await backend.root_dir(), "containers", cid)
    assert log_dir.is_dir()  # read from here, so the test means something
    removed = await backend.kill_and_remove(cid, logs_tail=120)
    assert removed.exit_code == 137  # SIGKILL through --init
    assert removed.logs == expected and removed.logs.endswith("done\n")
    assert not log_dir.exists()
    assert docker("ps", "-aq", "--filter", f"id={cid}") == ""
    with pytest.raises(ContainerNotFound):
        await backend.kill_and_remove(cid)


async def test_a_dead_container_gives_its_own_exit_code(backend: DockerBackend) -> None:
    cid = await backend.create(f"{RUN_LABEL}-exit3", {
        "Image": BUSYBOX, "Cmd": ["sh", "-c", "echo bye; exit 3"],
        "Labels": {"berth.test": "1", OWNER: f"{RUN_LABEL}-destroy"}})
    await backend.start(cid)
    for _ in range(100):
        if not (await backend.inspect(cid)).running:
            break
        await asyncio.sleep(0.05)
    removed = await backend.kill_and_remove(cid, logs_tail=10)
    assert (removed.exit_code, removed.logs) == (3, "bye\n")


async def test_output_comes_from_the_engine_when_the_log_is_not_on_this_host(
        backend: DockerBackend) -> None:
    cid = await started(backend, "remote")
    expected = await backend.logs(cid, tail=50)
    backend._root = "/nonexistent-docker-root"  # as for an engine on another host
    removed = await backend.kill_and_remove(cid, logs_tail=50)
    assert (removed.exit_code, removed.logs) == (137, expected)
