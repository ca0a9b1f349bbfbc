"""The mock accelerator on the real Docker engine: a kernel sees exactly its devices, a kernel
that does not fit is refused, and an allocation survives a kill -9 of its owner."""

import asyncio
import json
import os
import shutil
import signal
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from berth.errors import InsufficientResource
from berth.plugins import load_plugins
from berth.resources import KernelAllocation, ResourceManager
from berth.types import KernelId

IMAGE = "berth-test/resources-mini:latest"
LABEL = f"berth.test.run={uuid.uuid4().hex[:8]}"


def docker(*args: str) -> str:
    return subprocess.run(["docker", *args], check=True, capture_output=True, text=True).stdout


@pytest.fixture(scope="module")
def image(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    if shutil.which("docker") is None or subprocess.run(["docker", "info"], check=False,
                                                        capture_output=True).returncode:
        pytest.fail("dockerd is not reachable: start it (see reference/environment.md)")
    root = tmp_path_factory.mktemp("rootfs")
    for path in ("/bin/dash", "/usr/bin/env", *_libs("/bin/dash"), *_libs("/usr/bin/env")):
        dest = root / path.lstrip("/")
        dest.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(path, dest)
    (root / "bin/sh").symlink_to("dash")
    subprocess.run(f"tar -C {root} -c . | docker import -c 'LABEL berth.test=1' - {IMAGE}",
                   shell=True, check=True, capture_output=True)
    yield IMAGE
    subprocess.run(["docker", "rmi", "-f", IMAGE], check=False, capture_output=True)


def _libs(binary: str) -> list[str]:
    out = subprocess.run(["ldd", binary], check=True, capture_output=True, text=True).stdout
    return [p for line in out.splitlines() for p in line.split() if p.startswith("/")]


@pytest.fixture
def cleanup() -> Iterator[None]:
    yield
    ids = docker("ps", "-aq", "--filter", f"label={LABEL}").split()
    if ids:
        docker("rm", "-f", *ids)


def run_env(image: str, args: dict[str, object]) -> dict[str, str]:
    env = [f"--env={k}={v}" for k, v in args["Env"].items()]  # type: ignore[attr-defined]
    out = docker("run", "--rm", "--init", "--label", "berth.test=1", "--label", LABEL, *env,
                 image, "/usr/bin/env")
    return dict(line.split("=", 1) for line in out.splitlines() if "=" in line)


async def test_kernels_see_their_mock_devices(image: str, cleanup: None) -> None:
    plugins = await load_plugins(allow=["mock"], configs={"mock": {"count": 4}})
    rm = ResourceManager(plugins)
    a = rm.allocate(KernelId("k1"), {"cpu": "0.5", "mem": "64m", "mock.device": "2"})
    b = rm.allocate(KernelId("k2"), {"cpu": "0.5", "mem": "64m", "mock.device": "2"})
    for alloc in (a, b):
        env = run_env(image, rm.docker_args(alloc))
        assert env["MOCK_VISIBLE_DEVICES"].split(",") == alloc.device_ids("mock")
    assert not set(a.device_ids("mock")) & set(b.device_ids("mock"))
    with pytest.raises(InsufficientResource) as err:
        rm.allocate(KernelId("k3"), {"cpu": "0.5", "mem": "64m", "mock.device": "1"})
    assert err.value.slot == "mock.device" and err.value.available == 0


CHILD = """
import asyncio, json, os, sys
from berth.plugins import load_plugins
from berth.resources import ResourceManager
async def main():
    rm = ResourceManager(await load_plugins(allow=["mock"], configs={"mock": {"count": 4}}))
    a = rm.allocate("k1", {"cpu": "0.5", "mock.device": "3"})
    tmp = sys.argv[1] + ".tmp"
    with open(tmp, "w") as f:
        json.dump(a.to_json(), f); f.flush(); os.fsync(f.fileno())
    os.replace(tmp, sys.argv[1])
    print("ready", flush=True)
    await asyncio.sleep(3600)
asyncio.run(main())
"""


def test_allocation_survives_kill_9(tmp_path: Path) -> None:
    ledger = tmp_path / "k1.json"
    child = subprocess.Popen([sys.executable, "-c", CHILD, str(ledger)], stdout=subprocess.PIPE,
                             text=True)
    try:
        assert child.stdout is not None and child.stdout.readline().strip() == "ready"
    finally:
        os.kill(child.pid, signal.SIGKILL)
        child.wait()
        if child.stdout is not None:
            child.stdout.close()
    assert child.returncode == -signal.SIGKILL
    record = KernelAllocation.from_json(json.loads(ledger.read_text()))
    rm = ResourceManager(asyncio.run(load_plugins(allow=["mock"],
                                                  configs={"mock": {"count": 4}})))
    rm.restore(KernelId("k1"), record)
    assert rm.available_slots()["mock.device"] == 1
    with pytest.raises(InsufficientResource):
        rm.allocate(KernelId("k2"), {"mock.device": "2"})
    assert rm.free(KernelId("k1")) == record
