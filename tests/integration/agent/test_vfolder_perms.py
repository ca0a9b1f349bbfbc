"""Issue 12 item 7d through the wired agent: what `ro`, `rw` and `wd` (rw-delete) vfolder mounts
allow inside a real kernel container, as docs/operations.md states it. `wd` is a vfolder
permission the Manager and storage proxy act on (the user may delete the folder itself); a bind
mount cannot let a process write a file and forbid it to unlink one, so `rw` and `wd` both mount
read-write (Backend.AI's agent downgrades `wd` the same way) and only `ro` refuses changes."""

from __future__ import annotations

import json
import os
import subprocess
import uuid
from pathlib import Path

import pytest

from .conftest import AgentFactory, kernel_config

UID = 9001  # [container] kernel-uid default


def sh(container_id: str, script: str) -> str:
    proc = subprocess.run(["docker", "exec", container_id, "busybox", "sh", "-c", script],
                          check=False, capture_output=True, text=True, timeout=30)
    return proc.stdout + proc.stderr


@pytest.mark.timeout(120)
async def test_ro_refuses_changes_rw_and_wd_both_write_and_delete(
        agent_factory: AgentFactory, tmp_path: Path) -> None:
    vroot = tmp_path / "vfolders"
    for name in ("ro", "rw", "wd"):
        (vroot / name).mkdir(parents=True)
        (vroot / name / "old.txt").write_text("before\n")
        for p in (vroot / name, vroot / name / "old.txt"):
            os.chown(p, UID, UID)
    agent = await agent_factory(container_toml=f'vfolder-allowed-roots = ["{vroot}"]')
    config = kernel_config()
    config["mounts"] = [{"name": n, "host_path": str(vroot / n), "mount_perm": n}
                        for n in ("ro", "rw", "wd")]
    kid = str(uuid.uuid4())
    async with agent.client() as c:
        created = await c.create_kernels(kid, [kid], [config], {})
        cid = created[0]["container_id"]
        for name in ("ro", "rw", "wd"):
            out = sh(cid, f"cd /home/work/{name} && (echo new > new.txt && echo WROTE); "
                          "(rm old.txt && echo DELETED); true")
            if name == "ro":
                assert "WROTE" not in out and "DELETED" not in out, out
            else:
                assert "WROTE" in out and "DELETED" in out, (name, out)
        await c.destroy_kernel(kid, kid)

    assert (vroot / "ro" / "old.txt").exists() and not (vroot / "ro" / "new.txt").exists()
    for name in ("rw", "wd"):
        assert (vroot / name / "new.txt").read_text() == "new\n"
        assert not (vroot / name / "old.txt").exists()


def test_the_container_mounts_say_the_same(tmp_path: Path) -> None:
    """The Docker mount spec Berth builds: ro is ReadOnly, rw and wd are not."""
    from berth.storage.vfolders import docker_mounts, parse_mounts

    for name in ("ro", "rw", "wd"):
        (tmp_path / name).mkdir()
    mounts = docker_mounts(parse_mounts(
        [{"name": n, "host_path": str(tmp_path / n), "mount_perm": n} for n in ("ro", "rw", "wd")],
        [tmp_path]))
    read_only = {Path(m["Target"]).name: m["ReadOnly"] for m in mounts}
    assert read_only == {"ro": True, "rw": False, "wd": False}, json.dumps(mounts)
