"""push_image against a real local registry: byte progress, done, and the image is there."""

from __future__ import annotations

import asyncio
import json
import urllib.request
import uuid
from pathlib import Path

from support.docker import docker
from support.procs import RegistryServer

from berth.backend.docker import DockerBackend
from berth.events.bgtask import BackgroundTaskManager, TaskStatus
from berth.events import BgtaskFailedEvent, BgtaskUpdatedEvent, RecordingEmitter
from berth.images.commit import ImageCommitService


def tags(host: str, repo: str) -> list[str]:
    with urllib.request.urlopen(f"http://{host}/v2/{repo}/tags/list", timeout=5) as resp:
        return list(json.load(resp)["tags"])


async def test_push_sends_a_local_image_to_its_registry(
        tmp_path: Path, image_backend: DockerBackend) -> None:
    with RegistryServer(tmp_path / "registry") as server:
        repo = f"berth-test/push-{uuid.uuid4().hex[:8]}"
        ref = f"{server.host}/{repo}:v1"
        docker("tag", "berth/busybox:latest", ref)
        try:
            em = RecordingEmitter()
            tasks = BackgroundTaskManager(em, progress_interval=0)
            svc = ImageCommitService(image_backend, tasks, tmp_path / "commit")
            # the ImageRef as the Manager's pickle arrives, and its registry with credentials
            image_ref = {"name": repo.split("/")[1], "project": "berth-test", "tag": "v1",
                         "registry": server.host, "architecture": "x86_64", "is_local": False,
                         "tag_set": ["v1", {}]}
            registry = {"name": server.host, "url": f"http://{server.host}",
                        "username": "berth", "password": "secret"}
            record = await tasks.wait(svc.start_push(image_ref, registry), 120)
            assert record.status is TaskStatus.DONE, record.message
            progress = [(e.current_progress, e.total_progress) for e in em.events
                        if isinstance(e, BgtaskUpdatedEvent) and e.total_progress > 0]
            assert progress and progress[-1][0] == progress[-1][1] > 0, progress
            assert await asyncio.to_thread(tags, server.host, repo) == ["v1"]
            docker("rmi", ref)
            docker("pull", ref)  # and it comes back from there
            assert docker("image", "inspect", "-f", "{{.Id}}", ref) == docker(
                "image", "inspect", "-f", "{{.Id}}", "berth/busybox:latest")

            missing = svc.start_push(f"{server.host}/berth-test/absent:v1", registry)
            record = await tasks.wait(missing, 30)
            assert record.status is TaskStatus.FAILED
            assert isinstance(em.events[-1], BgtaskFailedEvent)
        finally:
            docker("rmi", ref, check=False)
