"""Pulls from a real local registry through ImageService, with bgtask events recorded."""

from __future__ import annotations

from berth.backend.docker import DockerBackend
from berth.events.bgtask import BackgroundTaskManager, TaskStatus
from berth.events import BgtaskFailedEvent, BgtaskUpdatedEvent, RecordingEmitter
from berth.images.service import ImageBackend, ImageService

from .conftest import Registry


async def test_pull_reports_growing_byte_progress_then_done(
        registry: Registry, image_backend: DockerBackend) -> None:
    em = RecordingEmitter()
    tasks = BackgroundTaskManager(em, progress_interval=0)
    svc = ImageService(image_backend, tasks, em, agent_id="ag")
    assert await image_backend.image_inspect(registry.image) is None
    try:
        ids = await svc.check_and_pull({"img": {"canonical": registry.image, "digest": "",
                                                "auto_pull": "tag", "registry": {}}})
        rec = await tasks.wait(ids["img"], 60)
        assert rec.status is TaskStatus.DONE, rec.message
        bytes_seen = [(e.current_progress, e.total_progress) for e in em.events
                      if isinstance(e, BgtaskUpdatedEvent) and e.total_progress > 0]
        currents = [c for c, _ in bytes_seen]
        assert len(set(currents)) >= 2, bytes_seen
        assert currents == sorted(currents)
        assert bytes_seen[-1][0] == bytes_seen[-1][1] >= 12 * 1024 * 1024
        assert em.names()[-1] == "bgtask_done"
        installed = await svc.list_installed()
        assert {"canonical": registry.image} .items() <= next(
            i for i in installed if i["canonical"] == registry.image).items()
        # a second check with policy tag finds it present and starts nothing
        assert await svc.check_and_pull({"img": {"canonical": registry.image,
                                                 "auto_pull": "tag"}}) == {}
    finally:
        await image_backend.image_remove(registry.image, force=True)


async def test_missing_tag_fails_with_reason(
        registry: Registry, image_backend: DockerBackend) -> None:
    em = RecordingEmitter()
    tasks = BackgroundTaskManager(em)
    svc = ImageService(image_backend, tasks, em, agent_id="ag")
    missing = registry.image.rsplit(":", 1)[0] + ":no-such-tag"
    ids = await svc.check_and_pull({"m": {"canonical": missing, "auto_pull": "digest"}})
    rec = await tasks.wait(ids["m"], 30)
    assert rec.status is TaskStatus.FAILED
    last = em.events[-1]
    assert isinstance(last, BgtaskFailedEvent)
    assert "not found" in (last.message or "") or "unknown" in (last.message or "")
    assert "image_pull_failed" in em.names()


async def test_purge_removes_pulled_image(
        registry: Registry, image_backend: DockerBackend) -> None:
    em = RecordingEmitter()
    svc = ImageService(image_backend, BackgroundTaskManager(em), em)
    rec = await svc.pull_and_wait({"canonical": registry.image})
    assert rec.status is TaskStatus.DONE
    res = await svc.purge_images([registry.image, registry.image + "-absent"])
    assert res.removed == [registry.image] and list(res.failed) == [registry.image + "-absent"]
    assert await image_backend.image_inspect(registry.image) is None


def _docker_backend_is_an_image_backend(b: DockerBackend) -> ImageBackend:
    return b  # checked by mypy: the product backend satisfies the ImageService's role
