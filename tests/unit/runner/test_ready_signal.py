"""The real krunner wakes the agent through the ready FIFO once it is ready, and not before."""

from __future__ import annotations

import asyncio
import os
import stat
import time

import pytest

from berth.runner import RunnerClient
from berth.runner.kernel_side.protocol import READY_FIFO
from berth.runner.readiness import ReadySignal

from .conftest import KernelDirs, StartRunner


def open_signal(dirs: KernelDirs, woke: asyncio.Event) -> ReadySignal:
    return ReadySignal.open(dirs.root, ("config", "ipc"), os.getuid(), os.getgid(), woke.set)


async def test_the_runner_signals_after_its_bootstrap(start_runner: StartRunner,
                                                      kernel_dirs: KernelDirs) -> None:
    gate = kernel_dirs.work / "gate"
    script = kernel_dirs.work / "bootstrap.sh"
    script.write_text(f"while [ ! -e {gate} ]; do sleep 0.02; done\n")
    woke = asyncio.Event()
    signal = open_signal(kernel_dirs, woke)
    try:
        start_runner(bootstrap=True)
        async with RunnerClient(kernel_dirs.socket, request_timeout=20) as client:
            deadline = time.monotonic() + 20
            while not os.path.exists(kernel_dirs.socket):  # bound, then bootstrapping
                assert time.monotonic() < deadline
                await asyncio.sleep(0.02)
            assert not await client.probe_ready()
            await asyncio.sleep(0.3)
            assert not woke.is_set() and signal.signals == 0  # not ready: no wake-up
            gate.touch()
            await asyncio.wait_for(woke.wait(), 20)
            assert signal.signals == 1
            assert await client.probe_ready()  # what the agent asks when woken
    finally:
        signal.close()
    assert not os.path.lexists(kernel_dirs.ipc / READY_FIFO)


async def test_a_regular_file_in_place_of_the_fifo_is_not_written(
        start_runner: StartRunner, kernel_dirs: KernelDirs) -> None:
    """The runner writes only into a FIFO, never through a link or into a file."""
    planted = kernel_dirs.ipc / READY_FIFO
    planted.write_bytes(b"")
    target = kernel_dirs.root / "outside"
    target.write_bytes(b"")
    first = start_runner()
    async with RunnerClient(kernel_dirs.socket, request_timeout=20) as client:
        await client.wait_ready(time.monotonic() + 20)
    first.stop()
    assert planted.read_bytes() == b""
    planted.unlink()
    planted.symlink_to(target)
    start_runner()
    async with RunnerClient(kernel_dirs.socket, request_timeout=20) as client:
        await client.wait_ready(time.monotonic() + 20)
    assert target.read_bytes() == b""


async def test_the_agent_side_replaces_what_was_there_and_reads_a_flood_in_bounded_reads(
        kernel_dirs: KernelDirs) -> None:
    path = kernel_dirs.ipc / READY_FIFO
    target = kernel_dirs.root / "outside"
    target.write_bytes(b"")
    path.symlink_to(target)  # a link is removed, never followed
    woke = asyncio.Event()
    signal = open_signal(kernel_dirs, woke)
    try:
        assert stat.S_ISFIFO(path.lstat().st_mode) and target.read_bytes() == b""
        fd = os.open(path, os.O_WRONLY | os.O_NONBLOCK)
        try:
            os.write(fd, b"r" * 20000)  # a forged flood: a few reads, one wake-up each
        finally:
            os.close(fd)
        await asyncio.wait_for(woke.wait(), 5)
        await asyncio.sleep(0.05)
        assert 1 <= signal.signals <= 5
    finally:
        signal.close()
    path.mkdir()
    (path / "x").write_bytes(b"")
    with pytest.raises(OSError):  # the lifecycle then falls back to asking now and then
        open_signal(kernel_dirs, woke)
