"""The manager's own client commits a kernel of a real Berth agent (LabelName enum keys) and
pushes the image (a pickled ImageRef) to a local registry."""

from __future__ import annotations

import asyncio
import json
import urllib.request
import uuid
from pathlib import Path

from support.docker import docker
from support.procs import RegistryServer

from .conftest import CompatNode, RunInImage


def tags(host: str, repo: str) -> list[str]:
    try:
        with urllib.request.urlopen(f"http://{host}/v2/{repo}/tags/list", timeout=5) as resp:
            return list(json.load(resp).get("tags") or [])
    except OSError:
        return []


async def test_commit_and_push_as_the_session_commit_task_asks(
        run_in_image: RunInImage, compat_node: CompatNode, tmp_path: Path) -> None:
    kid = str(uuid.uuid4())
    with RegistryServer(tmp_path / "registry") as registry:
        repo = f"berth-test/compat-{uuid.uuid4().hex[:8]}"
        canonical = f"{registry.host}/{repo}:v1"
        try:
            async with compat_node.agent.client() as c:
                await c.create_kernels(kid, [kid], [{
                    "image": {"canonical": "berth/busybox:latest", "is_local": True},
                    "resource_slots": {"cpu": "0.25", "mem": "96m"}}], {})
            reply = await asyncio.to_thread(run_in_image, "manager_commit_push.py", "commit",
                                            kid, canonical)
            assert uuid.UUID(reply["bgtask_id"])
            async with compat_node.agent.client() as c:
                for _ in range(300):
                    state = await c.call("get_commit_status", kid, "user_example.com")
                    if state["status"] == "ready":
                        break
                    await asyncio.sleep(0.2)
            labels = json.loads(docker("image", "inspect", "-f", "{{json .Config.Labels}}",
                                       canonical))
            assert labels["ai.backend.customized-image.name"] == "compat image"
            assert labels["ai.backend.customized-image.owner"] == "user:0e4b1c1e"

            reply = await asyncio.to_thread(run_in_image, "manager_commit_push.py", "push",
                                            canonical, "berth-test", registry.host)
            assert uuid.UUID(reply["bgtask_id"])
            for _ in range(300):
                if await asyncio.to_thread(tags, registry.host, repo) == ["v1"]:
                    break
                await asyncio.sleep(0.2)
            assert await asyncio.to_thread(tags, registry.host, repo) == ["v1"]
        finally:
            async with compat_node.agent.client() as c:
                await c.destroy_kernel(kid, kid)
            docker("rmi", "-f", canonical, check=False)
