"""ImageService over an in-memory ImageBackend (policies, progress, failures, purge)."""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping
from typing import Any

import pytest

from berth.backend.base import ImageInfo
from berth.errors import ContainerConflict, ImageNotAvailable, ImagePullFailed, InvalidArgument
from berth.events import (
    BgtaskFailedEvent,
    BgtaskUpdatedEvent,
    ImagePullFinishedEvent,
    RecordingEmitter,
)
from berth.events.bgtask import BackgroundTaskManager, TaskStatus
from berth.images.service import (
    AutoPullPolicy,
    ImageService,
    PullProgress,
    engine_ref,
    needs_pull,
    registry_auth,
    wire_image_ref,
)


class FakeBackend:
    def __init__(self) -> None:
        self.images: dict[str, ImageInfo] = {}
        self.remote: dict[str, tuple[str, list[dict[str, Any]]]] = {}
        self.pulls: list[tuple[str, Mapping[str, str] | None]] = []
        self.in_use: set[str] = set()
        self.inspects: list[str] = []
        self.closed = False

    async def image_pull(self, ref: str, auth: Mapping[str, str] | None = None
                         ) -> AsyncIterator[Mapping[str, Any]]:
        self.pulls.append((ref, auth))
        if ref not in self.remote:
            raise ImagePullFailed(f"manifest for {ref} not found", reason="manifest unknown")
        image_id, events = self.remote[ref]
        for ev in events:
            yield ev
        self.images[ref] = ImageInfo(image_id, (ref,), {})

    async def image_inspect(self, ref: str) -> ImageInfo | None:
        self.inspects.append(ref)
        by_id = {i.id: i for i in self.images.values()}
        return self.images.get(ref) or by_id.get(ref)

    async def image_remove(self, ref: str, *, force: bool = False,
                           noprune: bool = False) -> None:
        if ref not in self.images:
            raise ImageNotAvailable(ref)
        if ref in self.in_use and not force:
            raise ContainerConflict(f"{ref} is in use")
        del self.images[ref]

    async def image_list(self) -> list[ImageInfo]:
        return list(self.images.values())

    async def close(self) -> None:
        self.closed = True


def layer_events(total: int, steps: int) -> list[dict[str, Any]]:
    evs: list[dict[str, Any]] = [{"status": "Pulling fs layer", "id": "l1"}]
    for i in range(1, steps + 1):
        evs.append({"status": "Downloading", "id": "l1",
                    "progressDetail": {"current": total * i // steps, "total": total}})
    evs += [{"status": "Download complete", "id": "l1"}, {"status": "Pull complete", "id": "l1"}]
    return evs


def cfg(ref: str, policy: str = "digest", digest: str = "sha256:new", **extra: Any
        ) -> dict[str, Any]:
    return {"canonical": ref, "digest": digest, "auto_pull": policy,
            "registry": {"name": "r", "url": "http://r"}, **extra}


def make() -> tuple[FakeBackend, RecordingEmitter, BackgroundTaskManager, ImageService]:
    be, em = FakeBackend(), RecordingEmitter()
    tasks = BackgroundTaskManager(em, progress_interval=0)
    return be, em, tasks, ImageService(be, tasks, em, agent_id="ag")


@pytest.mark.parametrize(("policy", "local_id", "expected"), [
    ("digest", None, True), ("digest", "sha256:old", True), ("digest", "sha256:new", False),
    ("tag", None, True), ("tag", "sha256:old", False), ("none", "sha256:old", False),
])
def test_needs_pull(policy: str, local_id: str | None, expected: bool) -> None:
    local = None if local_id is None else ImageInfo(local_id, (), {})
    assert needs_pull(cfg("x:1"), local, AutoPullPolicy(policy)) is expected


def test_policy_none_with_missing_image_raises() -> None:
    with pytest.raises(ImageNotAvailable):
        needs_pull(cfg("x:1"), None, AutoPullPolicy.NONE)


def test_registry_auth_only_with_credentials() -> None:
    assert registry_auth(cfg("x")) is None
    c = cfg("x", registry={"name": "r", "url": "http://r", "username": "u", "password": "p"})
    assert registry_auth(c) == {"username": "u", "password": "p", "serveraddress": "http://r"}


def test_pull_progress_sums_layers_and_raises_on_error() -> None:
    p = PullProgress()
    p.feed({"status": "Downloading", "id": "a", "progressDetail": {"current": 5, "total": 10}})
    p.feed({"status": "Downloading", "id": "b", "progressDetail": {"current": 1, "total": 20}})
    assert (p.current, p.total) == (6, 30)
    assert p.feed({"status": "Download complete", "id": "a"})
    assert (p.current, p.total) == (11, 30)
    with pytest.raises(ImagePullFailed, match="denied"):
        p.feed({"error": "x", "errorDetail": {"message": "denied"}})


async def test_check_and_pull_reports_growing_progress_then_done() -> None:
    be, em, tasks, svc = make()
    be.remote["reg/a:1"] = ("sha256:new", layer_events(1000, 4))
    ids = await svc.check_and_pull({"a": cfg("reg/a:1")})
    rec = await tasks.wait(ids["a"], 2)
    assert rec.status is TaskStatus.DONE
    prog = [e.current_progress for e in em.events
            if isinstance(e, BgtaskUpdatedEvent) and e.total_progress == 1000]
    assert prog == [250, 500, 750, 1000]
    assert [n for n in em.names() if n.startswith("image_pull")] == [
        "image_pull_started", "image_pull_finished"]
    assert em.names()[-1] == "bgtask_done"


async def test_up_to_date_images_are_not_pulled_and_duplicates_share_a_task() -> None:
    be, _em, tasks, svc = make()
    be.images["reg/a:1"] = ImageInfo("sha256:new", ("reg/a:1",), {})
    be.remote["reg/b:1"] = ("sha256:new", layer_events(10, 1))
    ids = await svc.check_and_pull({"a": cfg("reg/a:1"), "b": cfg("reg/b:1"),
                                    "b2": cfg("reg/b:1")})
    assert set(ids) == {"b", "b2"} and ids["b"] == ids["b2"]
    await tasks.wait(ids["b"], 2)
    assert len(be.pulls) == 1


async def test_missing_tag_fails_with_reason() -> None:
    _be, em, tasks, svc = make()
    ids = await svc.check_and_pull({"m": cfg("reg/missing:nope")})
    rec = await tasks.wait(ids["m"], 2)
    assert rec.status is TaskStatus.FAILED
    failed = em.events[-1]
    assert isinstance(failed, BgtaskFailedEvent) and "not found" in (failed.message or "")
    assert "image_pull_failed" in em.names()


@pytest.mark.parametrize("configs", [
    {"a": {"canonical": 5}}, {"a": 5}, {"a": None}, {"a": {"canonical": "x:1", "auto_pull": "?"}},
    ["a"], "a", {"a": {"canonical": "reg/a:1"}, "b": {}},
])
async def test_malformed_image_configs_are_refused_whole_before_any_pull(configs: Any) -> None:
    be, em, _tasks, svc = make()
    with pytest.raises(InvalidArgument):
        await svc.check_and_pull(configs)
    assert be.pulls == [] and em.events == []


async def test_policy_none_missing_image_yields_failed_task() -> None:
    be, _em, tasks, svc = make()
    ids = await svc.check_and_pull({"n": cfg("reg/n:1", policy="none")})
    rec = await tasks.wait(ids["n"], 2)
    assert rec.status is TaskStatus.FAILED and be.pulls == []


async def test_purge_reports_in_use_images() -> None:
    be, _em, _tasks, svc = make()
    for ref in ("a:1", "b:1"):
        be.images[ref] = ImageInfo(ref, (ref,), {"ai.backend.kernelspec": "1"})
    be.in_use.add("b:1")
    res = await svc.purge_images(["a:1", "b:1", "c:1"])
    assert res.removed == ["a:1"] and set(res.failed) == {"b:1", "c:1"}


async def test_list_installed_keeps_kernel_images() -> None:
    be, _em, _tasks, svc = make()
    be.images["k:1"] = ImageInfo("sha256:1", ("k:1",), {"ai.backend.kernelspec": "1"},
                                 architecture="amd64")
    be.images["other:1"] = ImageInfo("sha256:2", ("other:1",), {})
    assert await svc.list_installed() == [
        {"canonical": "k:1", "digest": "sha256:1", "architecture": "x86_64"}]
    assert len(await svc.list_installed(kernel_only=False)) == 2


async def test_list_installed_inspects_an_image_for_its_architecture_once() -> None:
    """The engine's image list has no architecture; the manager matches on it."""
    be, _em, _tasks, svc = make()
    inspected = ImageInfo("sha256:1", ("k:1",), {"ai.backend.kernelspec": "1"},
                          architecture="arm64")
    be.images["k:1"] = inspected

    async def listed() -> list[ImageInfo]:
        return [ImageInfo("sha256:1", ("k:1", "k:latest"), inspected.labels)]
    be.image_list = listed  # type: ignore[method-assign]
    for _ in range(3):
        assert {i["architecture"] for i in await svc.list_installed()} == {"aarch64"}
    assert be.inspects == ["sha256:1"]


async def test_an_image_already_present_gets_image_pull_finished() -> None:
    """The manager waits for one image event per image it asked about."""
    be, em, _tasks, svc = make()
    be.images["r/proj/a:1"] = ImageInfo("sha256:new", ("r/proj/a:1",), {})
    ids = await svc.check_and_pull({"a": cfg("r/proj/a:1", project="proj",
                                              architecture="aarch64")})
    assert ids == {} and be.pulls == []
    (ev,) = em.events
    assert isinstance(ev, ImagePullFinishedEvent) and ev.msg == "Image already exists"
    assert ev.payload()["image_ref"] == {"name": "a", "project": "proj", "tag": "1",
                                         "registry": "r", "architecture": "aarch64",
                                         "is_local": False}


async def test_local_images_are_never_pulled_and_found_by_their_short_name() -> None:
    be, em, tasks, svc = make()
    local = {"name": "local", "url": "http://localhost"}
    be.images["berth/python:3.11"] = ImageInfo("sha256:x", ("berth/python:3.11",), {})
    ids = await svc.check_and_pull({
        "here": cfg("local/berth/python:3.11", registry=local, is_local=True, project="berth"),
        "gone": cfg("local/berth/gone:1", registry=local, is_local=True, project="berth")})
    assert set(ids) == {"gone"} and be.pulls == []
    assert (await tasks.wait(ids["gone"], 2)).status is TaskStatus.FAILED
    assert [n for n in em.names() if n.startswith("image_pull")] == [
        "image_pull_finished", "image_pull_failed"]


@pytest.mark.parametrize(("config", "ref"), [
    ({"canonical": "cr.io/stable/python:3.9-ubuntu", "project": "stable",
      "registry": {"name": "cr.io"}},
     {"name": "python", "project": "stable", "tag": "3.9-ubuntu", "registry": "cr.io"}),
    ({"canonical": "cr.io/stable:3", "project": "stable", "registry": {"name": "cr.io"}},
     {"name": "", "project": "stable", "tag": "3", "registry": "cr.io"}),
    ({"canonical": "127.0.0.1:5000/a/b:t", "project": None,
      "registry": {"name": "127.0.0.1:5000"}},
     {"name": "a/b", "project": None, "tag": "t", "registry": "127.0.0.1:5000"}),
])
def test_wire_image_ref_splits_the_canonical(config: dict[str, Any], ref: dict[str, Any]) -> None:
    assert wire_image_ref(config) == {**ref, "architecture": "x86_64", "is_local": False}


@pytest.mark.parametrize("config", [
    {"canonical": "r/a@sha256:abc", "registry": {"name": "r"}},
    {"canonical": "r/other/a:1", "project": "proj", "registry": {"name": "r"}},
])
def test_wire_image_ref_is_none_when_the_canonical_does_not_split(config: dict[str, Any]) -> None:
    assert wire_image_ref(config) is None


def test_engine_ref_strips_the_registry_of_local_images_only() -> None:
    assert engine_ref({"canonical": "local/b/p:1", "is_local": True,
                       "registry": {"name": "local"}}) == "b/p:1"
    assert engine_ref({"canonical": "local/b/p:1", "registry": {"name": "local"}}) == "local/b/p:1"
