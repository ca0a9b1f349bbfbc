"""Commit, export and push as background tasks over the fake engine."""

from __future__ import annotations

import gzip
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from support.facade import facade_over

from berth.backend import FakeBackend
from berth.errors import InvalidArgument, KernelStateError
from berth.events import BgtaskDoneEvent, BgtaskFailedEvent, BgtaskUpdatedEvent, RecordingEmitter
from berth.events.bgtask import BackgroundTaskManager, TaskStatus
from berth.images.commit import (
    ImageCommitService,
    commit_labels,
    commit_target,
    export_path,
    ref_of,
)
from berth.kernel.warmplan import WARM_ID_LABEL, WARM_POOL_LABEL
from berth.rpc.handlers import HandlerRegistry
from berth.types import KernelState

BASE = "berth/python:3.11"
BASE_LABELS = {"ai.backend.runtime-type": "python", "ai.backend.service-ports": "x:http:8080"}
AGENT = "ag-commit"
KID = "0f2a6c54-3c1f-4a70-9a55-6f0e8f3b9c21"


class Setup:
    def __init__(self, tmp_path: Path) -> None:
        self.backend = FakeBackend()
        self.backend.add_image(BASE, labels=BASE_LABELS)
        self.emitter = RecordingEmitter()
        self.tasks = BackgroundTaskManager(self.emitter, progress_interval=0)
        self.root = tmp_path / "commit"
        self.commits = ImageCommitService(self.backend, self.tasks, self.root)
        self.registry = SimpleNamespace(find=self.find)
        self.kernel: Any = None
        self.facade = facade_over(AGENT, registry=self.registry, commits=self.commits)

    def find(self, kernel_id: str) -> Any:
        return self.kernel if self.kernel and kernel_id == self.kernel.kernel_id else None

    async def run_kernel(self) -> str:
        cid = await self.backend.create("berth-kernel.k", {"Image": BASE, "Labels": {
            "ai.backend.owner": AGENT, "ai.backend.kernel-id": KID,
            "ai.backend.session-id": "s1", "ai.backend.service-ports": "x:http:8080,8081:preopen:8081"}})
        await self.backend.start(cid)
        self.kernel = SimpleNamespace(kernel_id=KID, state=KernelState.RUNNING, container_id=cid,
                                      spec=SimpleNamespace(image=SimpleNamespace(canonical=BASE)),
                                      image_labels=BASE_LABELS)
        return cid

    def of(self, task_id: str) -> list[Any]:
        return [e for e in self.emitter.events if getattr(e, "task_id", None) == task_id]


@pytest.fixture
def s(tmp_path: Path) -> Setup:
    return Setup(tmp_path)


async def test_commit_tags_a_new_image_with_the_labels_and_reports_done(s: Setup) -> None:
    await s.run_kernel()
    gate = s.backend.hold("commit")
    reply = await s.facade.commit(KID, "user_example.com", canonical="127.0.0.1:5000/my/img:v1",
                                  extra_labels={"ai.backend.customized-image.name": "mine x$y"},
                                  agent_id=AGENT)
    task_id = reply["bgtask_id"]
    await gate.reached.wait()
    assert await s.facade.get_commit_status(KID, "user_example.com") == {
        "kernel": KID, "status": "ongoing"}
    with pytest.raises(KernelStateError):  # one commit of a kernel at a time
        await s.facade.commit(KID, "user_example.com", canonical="127.0.0.1:5000/my/img:v2")
    gate.release()
    record = await s.tasks.wait(task_id, 5)
    assert record.status is TaskStatus.DONE, record.message
    assert (await s.facade.get_commit_status(KID, ""))["status"] == "ready"
    image = await s.backend.image_inspect("127.0.0.1:5000/my/img:v1")
    assert image is not None
    assert image.labels["ai.backend.customized-image.name"] == "mine x$y"
    assert image.labels["ai.backend.runtime-type"] == "python"  # the base image's stay
    # the container's identity is not baked into the image; its service ports are the image's
    assert image.labels["ai.backend.owner"] == "" and image.labels["ai.backend.kernel-id"] == ""
    assert image.labels["ai.backend.service-ports"] == "x:http:8080"
    events = s.of(task_id)
    assert isinstance(events[-1], BgtaskDoneEvent)
    assert any(isinstance(e, BgtaskUpdatedEvent) and e.message == "committing the container"
               for e in events)


async def test_commit_to_file_exports_gzip_and_leaves_the_base_tag_alone(s: Setup) -> None:
    await s.run_kernel()
    before = {i.id: i.tags for i in s.backend.images.values()}
    reply = await s.facade.commit(KID, "user_example.com", canonical=BASE, extra_labels={},
                                  filename="2026-12-01_sess_python-3.11.tar.gz")
    record = await s.tasks.wait(reply["bgtask_id"], 5)
    assert record.status is TaskStatus.DONE, record.message
    path = s.root / "user_example.com" / "2026-12-01_sess_python-3.11.tar.gz"
    assert gzip.decompress(path.read_bytes()).startswith(b"fake image tarball of sha256:")
    assert [p.name for p in path.parent.iterdir()] == [path.name]  # no temp file left
    # the base image keeps its tag and the untagged snapshot is gone again
    assert {i.id: i.tags for i in s.backend.images.values()} == before


@pytest.mark.parametrize(("email", "filename"), [
    ("user", "../escape.tar"), ("user", "a/b.tar"), ("..", "x.tar"), ("", "x.tar"),
    ("user", "."), ("user", "nul\x00.tar")])
async def test_export_paths_stay_inside_the_commit_dir(s: Setup, email: str,
                                                       filename: str) -> None:
    await s.run_kernel()
    with pytest.raises(InvalidArgument):
        await s.facade.commit(KID, email, filename=filename)
    assert not s.tasks.records and not s.root.exists()


def test_export_path_refuses_a_planted_link(tmp_path: Path) -> None:
    (tmp_path / "user").mkdir()
    (tmp_path / "user" / "x.tar").symlink_to("/etc/passwd")
    with pytest.raises(InvalidArgument):
        export_path(tmp_path, "user", "x.tar")
    assert export_path(tmp_path, "user", "y.tar") == tmp_path / "user" / "y.tar"


async def test_commit_needs_a_running_kernel_and_a_target(s: Setup) -> None:
    await s.run_kernel()
    with pytest.raises(InvalidArgument):
        await s.facade.commit(KID, "u")  # neither a new name nor a file
    s.kernel.state = KernelState.TERMINATING
    with pytest.raises(KernelStateError):
        await s.facade.commit(KID, "u", canonical="x/y:z")


def test_commit_target_never_moves_the_kernels_own_tag() -> None:
    assert commit_target(BASE, BASE) is None
    assert commit_target("127.0.0.1:5000/a/b", BASE) == ("127.0.0.1:5000/a/b", "latest")
    assert commit_target("r.io/p/n:t-1", BASE) == ("r.io/p/n", "t-1")
    with pytest.raises(InvalidArgument):
        commit_target("bad ref", BASE)


async def test_push_reports_progress_and_makes_the_image_pullable(s: Setup) -> None:
    ref = "127.0.0.1:5000/berth/pushed:v1"
    s.backend.add_image(ref)
    s.backend.registry_auth["127.0.0.1:5000"] = {"username": "u", "password": "p"}
    image_ref = {"name": "pushed", "project": "berth", "tag": "v1", "registry": "127.0.0.1:5000",
                 "architecture": "x86_64", "is_local": False, "tag_set": ["v1", {}]}
    registry = {"name": "127.0.0.1:5000", "url": "http://127.0.0.1:5000", "username": "u",
                "password": "p"}
    call = HandlerRegistry(s.facade).prepare("push_image", [image_ref, registry],
                                             {"agent_id": AGENT})
    reply = await call.run()
    record = await s.tasks.wait(reply["bgtask_id"], 5)
    assert record.status is TaskStatus.DONE, record.message
    assert s.backend.pushes == [(ref, {"username": "u", "password": "p",
                                       "serveraddress": "127.0.0.1:5000"})]
    assert "127.0.0.1:5000/berth/pushed:v1" in s.backend.remote
    progress = [e.current_progress for e in s.of(reply["bgtask_id"])
                if isinstance(e, BgtaskUpdatedEvent) and e.total_progress > 0]
    assert len(progress) >= 2 and progress == sorted(progress)


async def test_push_with_wrong_credentials_or_missing_image_fails_the_task(s: Setup) -> None:
    ref = "127.0.0.1:5000/berth/pushed:v1"
    s.backend.add_image(ref)
    s.backend.registry_auth["127.0.0.1:5000"] = {"username": "u", "password": "p"}
    bad = await s.facade.push_image(ref, {"username": "u", "password": "nope"})
    missing = await s.facade.push_image("127.0.0.1:5000/berth/absent:v1", {})
    for task_id, words in ((bad["bgtask_id"], "unauthorized"), (missing["bgtask_id"], "not on this node")):
        record = await s.tasks.wait(task_id, 5)
        assert record.status is TaskStatus.FAILED
        last = s.of(task_id)[-1]
        assert isinstance(last, BgtaskFailedEvent) and words in (last.message or "")
    assert not s.backend.remote


async def test_a_local_image_is_not_pushed(s: Setup) -> None:
    reply = await s.facade.push_image({"canonical": BASE, "is_local": True}, None)
    record = await s.tasks.wait(reply["bgtask_id"], 5)
    assert record.status is TaskStatus.DONE and not s.backend.pushes


def test_ref_of_builds_the_canonical_name() -> None:
    assert ref_of({"name": "python", "project": "stable", "tag": "3.9", "registry": "cr.io",
                   "is_local": False}) == ("cr.io/stable/python:3.9", False)
    assert ref_of({"name": "python", "project": None, "tag": "3.9", "registry": "cr.io",
                   "is_local": True}) == ("cr.io/python:3.9", True)
    with pytest.raises(InvalidArgument):
        ref_of({"project": "x"})


def test_a_commit_blanks_the_warm_pools_labels() -> None:
    # a kernel served from the pool keeps its container's pool labels; its image must not
    labels = commit_labels({}, None)
    assert labels[WARM_POOL_LABEL] == "" and labels[WARM_ID_LABEL] == ""
