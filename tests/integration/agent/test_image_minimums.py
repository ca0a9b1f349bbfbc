"""Issue 12 item 7e through the wired agent: an image's `ai.backend.resource.min.*` labels are
enforced at create (Backend.AI's rule: the mem minimum grows by the kernel's shmem, a slot the
installation does not know is skipped; with `[container] enforce-image-minimums`): a spec below them is refused with BelowImageMinimum
naming the slot, the amount asked and the minimum, and no container is made."""

from __future__ import annotations

import subprocess
import uuid
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest

from berth.errors import BelowImageMinimum

from .conftest import BUSYBOX, RUN_LABEL, AgentFactory, AgentProcess, containers, kernel_config

MIB = 1024 * 1024


@pytest.fixture
def labelled_image(tmp_path: Path) -> Iterator[str]:
    """busybox with minimum labels: cpu 0.5, mem 128m, cuda.device 1 (a slot this node lacks)."""
    tag = f"berth/min-labels:{RUN_LABEL}"
    ctx = tmp_path / "image"
    ctx.mkdir()
    (ctx / "Dockerfile").write_text(
        f"FROM {BUSYBOX}\n"
        'LABEL ai.backend.resource.min.cpu="0.5" ai.backend.resource.min.mem="128m" '
        'ai.backend.resource.min.cuda.device="1"\n')
    subprocess.run(["docker", "build", "-q", "-t", tag, str(ctx)], check=True,
                   capture_output=True, timeout=120)
    try:
        yield tag
    finally:
        subprocess.run(["docker", "rmi", "-f", tag], check=False, capture_output=True)


async def refused(agent: AgentProcess, config: dict[str, Any]) -> BelowImageMinimum:
    kid = str(uuid.uuid4())
    async with agent.client() as c:
        with pytest.raises(BelowImageMinimum) as info:
            await c.create_kernels(kid, [kid], [config], {})
    assert not containers(agent.agent_id, kid)
    return info.value


def spec(image: str, cpu: str, mem: str, **opts: Any) -> dict[str, Any]:
    config = kernel_config(image, cpu=cpu, mem=mem)
    config["resource_opts"] = opts
    return config


@pytest.mark.timeout(120)
async def test_a_spec_below_the_image_minimum_is_refused_naming_the_slot(
        agent_factory: AgentFactory, labelled_image: str) -> None:
    agent = await agent_factory(container_toml="enforce-image-minimums = true")

    low_cpu = await refused(agent, spec(labelled_image, "0.25", "256m"))
    assert (low_cpu.slot, Decimal(low_cpu.requested), Decimal(low_cpu.minimum)) == (
        "cpu", Decimal("0.25"), Decimal("0.5"))
    assert labelled_image in str(low_cpu)

    low_mem = await refused(agent, spec(labelled_image, "0.5", "96m"))
    assert (low_mem.slot, Decimal(low_mem.requested), Decimal(low_mem.minimum)) == (
        "mem", 96 * MIB, 128 * MIB)

    # 128m is the image's minimum, but shared memory counts on top of it (as the manager does).
    with_shm = await refused(agent, spec(labelled_image, "0.5", "128m", shmem="64m"))
    assert (with_shm.slot, Decimal(with_shm.minimum)) == ("mem", 192 * MIB)

    # At the minimum it runs; cuda.device is skipped on a node that has no such slot.
    kid = str(uuid.uuid4())
    async with agent.client() as c:
        created = await c.create_kernels(kid, [kid], [spec(labelled_image, "0.5", "128m")], {})
        assert await c.check_running(kid)
        await c.destroy_kernel(kid, kid)
    assert created[0]["container_id"]
