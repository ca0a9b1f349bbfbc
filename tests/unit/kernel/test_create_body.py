"""The whole create body of a representative kernel (cpu, mem, a mock device, block-I/O
rates, a vfolder mount, an image service port and a preopen port) against the body the agent
built before its HostConfig contributors went through one merge (``fixtures/create_body.json``,
captured from the earlier code with the same fake backend)."""

from __future__ import annotations

import json
import os
from decimal import Decimal
from pathlib import Path
from typing import Any

from berth.backend import FakeBackend
from berth.daemon.adapters import MountAdapter, ResourceAdapter
from berth.kernel.ledger import Ledger
from berth.kernel.lifecycle import KernelLifecycle
from berth.kernel.registry import KernelRegistry
from berth.network.ports import PortPool
from berth.plugins.mock import MockPlugin
from berth.resources import ResourceManager
from berth.stats import BlkioLimits, BlockDevice
from berth.storage import ScratchManager
from berth.types import SlotName

from .harness import (
    IDLE_IMAGE,
    IDLE_LABELS,
    PORT_RANGE,
    FakeRunnerFactory,
    RecordingSink,
    kernel_config,
    resource_manager,
    settings,
)

FIXTURE = Path(__file__).parent / "fixtures" / "create_body.json"


def _normalised(body: dict[str, Any], root: Path) -> dict[str, Any]:
    """The body with the test's root and the running user's ids as placeholders."""
    uid, gid = os.getuid(), os.getgid()
    out: dict[str, Any] = json.loads(json.dumps(body).replace(str(root), "<root>"))
    out["User"] = "<uid>:<gid>" if out["User"] == f"{uid}:{gid}" else out["User"]
    out["Env"] = [{f"LOCAL_USER_ID={uid}": "LOCAL_USER_ID=<uid>",
                   f"LOCAL_GROUP_ID={gid}": "LOCAL_GROUP_ID=<gid>"}.get(e, e)
                  for e in out["Env"]]
    return out


async def test_create_body_is_the_one_built_before_the_single_merge(tmp_path: Path) -> None:
    plain = await resource_manager(tmp_path / "host")
    mock = MockPlugin({"count": 2, "memory": "16g"})
    await mock.init()
    manager = ResourceManager([*plain.plugins, mock],
                              reserved={SlotName("cpu"): Decimal(0), SlotName("mem"): Decimal(0)})
    backend = FakeBackend()
    backend.add_image(IDLE_IMAGE, labels=IDLE_LABELS)
    (tmp_path / "runner").mkdir()
    (tmp_path / "vfolders/data").mkdir(parents=True)
    scratch = ScratchManager(tmp_path / "scratch", "hostdir", 0)
    registry = KernelRegistry()
    lc = KernelLifecycle(
        settings(tmp_path), backend=backend, registry=registry, ledger=Ledger(scratch.root),
        resources=ResourceAdapter(manager), ports=PortPool(*PORT_RANGE, cooldown=0),
        scratch=scratch, mounts=MountAdapter([tmp_path / "vfolders"], tmp_path / "runner"),
        runner_factory=FakeRunnerFactory(), events=RecordingSink(registry),
        limits=[BlkioLimits(BlockDevice("vda", 253, 0))])
    config = kernel_config(
        resource_slots={"cpu": "2", "mem": "512m", "mock.device": "1"},
        resource_opts={"io_read_bps": "10m", "shmem": "64m"}, preopen_ports=[9000],
        mounts=[{"name": "data", "host_path": str(tmp_path / "vfolders/data"),
                 "kernel_path": "/home/work/data", "mount_perm": "ro"}])
    try:
        await lc.create(config, "k-body", "s-body")
    finally:
        await lc.close()
    (container,) = backend.containers.values()
    assert _normalised(container.config, tmp_path) == json.loads(FIXTURE.read_text())
