"""Start the real krunner.py with the host's Python in a temp dir (no Docker)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from berth.runner import RUNNER_DIR, RunnerClient


@dataclass
class KernelDirs:
    root: Path
    work: Path = field(init=False)
    config: Path = field(init=False)
    ipc: Path = field(init=False)
    defs: Path = field(init=False)

    def __post_init__(self) -> None:
        self.work = self.root / "work"
        self.config = self.root / "config"
        self.ipc = self.config / "ipc"
        self.defs = self.root / "service-defs"
        for d in (self.work, self.ipc, self.defs):
            d.mkdir(parents=True, exist_ok=True)

    @property
    def socket(self) -> Path:
        return self.ipc / "runner.sock"


@dataclass
class RunnerProcess:
    proc: subprocess.Popen[bytes]
    dirs: KernelDirs

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


@pytest.fixture
def kernel_dirs(tmp_path: Path) -> Iterator[KernelDirs]:
    # Unix socket paths are limited to 108 bytes; pytest's tmp_path can be long.
    short = Path(f"/tmp/kr-{os.getpid()}-{time.monotonic_ns()}")
    short.symlink_to(tmp_path)
    try:
        yield KernelDirs(short)
    finally:
        short.unlink()


StartRunner = Callable[..., RunnerProcess]


@pytest.fixture
def start_runner(kernel_dirs: KernelDirs) -> Iterator[StartRunner]:
    started: list[RunnerProcess] = []

    def start(*extra: str, bootstrap: bool = False) -> RunnerProcess:
        # -I -S as in a kernel (kernel/container_config.py): the script's own path setup only
        cmd = [sys.executable, "-I", "-S", str(RUNNER_DIR / "krunner.py"),
               "--socket", str(kernel_dirs.socket),
               "--work", str(kernel_dirs.work), "--config", str(kernel_dirs.config),
               "--service-defs", str(kernel_dirs.defs), *extra]
        if bootstrap:
            cmd += ["--bootstrap", str(kernel_dirs.work / "bootstrap.sh")]
        tmp = kernel_dirs.root / "tmp"  # services' tempfiles go with the test, not to /tmp
        tmp.mkdir(exist_ok=True)
        env = {"PATH": os.environ["PATH"], "HOME": "/root", "TMPDIR": str(tmp)}
        log = open(kernel_dirs.root / "runner.log", "ab")  # noqa: SIM115 - closed below
        proc = subprocess.Popen(cmd, stdout=log, stderr=log, env=env)
        log.close()
        runner = RunnerProcess(proc, kernel_dirs)
        started.append(runner)
        return runner

    yield start
    for runner in started:
        runner.stop()


@pytest.fixture
async def runner_client(start_runner: StartRunner, kernel_dirs: KernelDirs) -> AsyncIterator[RunnerClient]:
    start_runner()
    async with RunnerClient(kernel_dirs.socket, request_timeout=20) as client:
        await client.wait_ready(time.monotonic() + 20)
        yield client
