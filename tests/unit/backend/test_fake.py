"""FakeBackend answers like the Docker seam: ids, names, labels, states, events, images."""

from __future__ import annotations

import asyncio
import inspect
from collections.abc import Mapping, Sequence
from typing import Any

import pytest

from berth.backend import (
    ContainerBackend,
    ContainerEvent,
    DockerBackend,
    ExecResult,
    FakeBackend,
    FakeContainer,
)
from berth.backend.base import RemovedContainer
from berth.errors import BackendError, ContainerConflict, ContainerNotFound, ImageNotAvailable

IMAGE = "berth/busybox:latest"


def config(image: str = IMAGE, labels: Mapping[str, str] | None = None,
           ports: Mapping[int, int] | None = None) -> dict[str, Any]:
    return {
        "Image": image,
        "Labels": dict(labels or {"ai.backend.owner": "ag", "berth.test": "1"}),
        "HostConfig": {"Init": True, "PortBindings": {
            f"{c}/tcp": [{"HostIp": "127.0.0.1", "HostPort": str(h)}]
            for c, h in (ports or {}).items()}},
    }


@pytest.fixture
def be() -> FakeBackend:
    backend = FakeBackend()
    backend.add_image(IMAGE, labels={"ai.backend.runtime-type": "app"})
    return backend


def test_fake_has_the_same_verbs_and_parameters_as_docker() -> None:
    def verbs(cls: type) -> dict[str, list[str]]:
        return {name: list(inspect.signature(fn).parameters)
                for name, fn in vars(cls).items()
                if callable(fn) and not name.startswith("_")}

    protocol = {n for n in vars(ContainerBackend) if not n.startswith("_")}
    fake, docker = verbs(FakeBackend), verbs(DockerBackend)
    assert protocol <= set(fake)
    assert {n: fake[n] for n in protocol} == {n: docker[n] for n in protocol}
    typed: ContainerBackend = FakeBackend()  # mypy checks the Protocol here
    assert typed is not None


async def test_create_start_inspect_list(be: FakeBackend) -> None:
    cid = await be.create("k1", config(ports={8080: 30001}))
    info = await be.inspect(cid)
    assert (info.name, info.running, info.status, info.pid) == ("k1", False, "created", 0)
    assert info.host_ports == {}  # no published ports before start, as in Docker
    await be.start(cid)
    info = await be.inspect(cid)
    assert info.running and info.status == "running" and info.pid > 0
    assert info.host_ports == {8080: 30001} and info.image == IMAGE
    assert info.labels["berth.test"] == "1"
    assert [c.id for c in await be.list({"ai.backend.owner": "ag"})] == [cid]
    assert await be.list({"ai.backend.owner": "other"}) == []
    assert (await be.inspect("k1")).id == cid  # by name
    assert (await be.inspect(cid[:12])).id == cid  # by id prefix


async def test_ephemeral_host_port_when_binding_has_none(be: FakeBackend) -> None:
    cfg = config()
    cfg["HostConfig"]["PortBindings"] = {"80/tcp": [{"HostIp": "127.0.0.1", "HostPort": ""}]}
    cid = await be.create("k", cfg)
    await be.start(cid)
    assert (await be.inspect(cid)).host_ports[80] >= 49153


async def test_duplicate_name_conflicts_until_removed(be: FakeBackend) -> None:
    cid = await be.create("same", config())
    with pytest.raises(ContainerConflict) as err:
        await be.create("same", config())
    assert err.value.data["status"] == 409
    await be.remove(cid)
    assert await be.create("same", config()) != cid


async def test_create_with_missing_image_is_404(be: FakeBackend) -> None:
    with pytest.raises(ContainerNotFound, match="No such image"):
        await be.create("k", config(image="nope:1"))
    assert be.containers == {}


async def test_unknown_id_is_not_found_for_every_verb(be: FakeBackend) -> None:
    for call in (be.start("x"), be.stop("x", grace=1), be.remove("x"), be.inspect("x"),
                 be.logs("x"), be.exec("x", ["true"])):
        with pytest.raises(ContainerNotFound):
            await call


async def test_stop_exits_143_and_is_a_noop_when_stopped(be: FakeBackend) -> None:
    cid = await be.create("k", config())
    await be.start(cid)
    await be.stop(cid, grace=1)
    info = await be.inspect(cid)
    assert (info.running, info.exit_code, info.status) == (False, 143, "exited")
    await be.stop(cid, grace=1)  # Docker's 304: not an error
    be.containers[cid].stop_exit_code = 0
    await be.start(cid)
    assert (await be.inspect(cid)).exit_code == 0  # start resets the exit code
    await be.stop(cid, grace=1)
    assert (await be.inspect(cid)).exit_code == 0


async def test_kill_and_remove_is_rm_f_with_exit_code_and_log_tail(be: FakeBackend) -> None:
    running = await be.create("a", config())
    await be.start(running)
    be.write_log(running, "one\ntwo\nthree\n")
    removed = await be.kill_and_remove(running, logs_tail=2)
    assert (removed.exit_code, removed.logs) == (137, "two\nthree\n")
    assert running not in be.containers
    dead = await be.create("b", config())
    await be.start(dead)
    be.kill(dead, 3)
    assert await be.kill_and_remove(dead) == RemovedContainer(3, None)  # no logs asked for
    with pytest.raises(ContainerNotFound):
        await be.kill_and_remove(dead)


async def test_kill_records_exit_code_and_oom(be: FakeBackend) -> None:
    cid = await be.create("k", config())
    await be.start(cid)
    be.kill(cid, 137, oom=True)
    info = await be.inspect(cid)
    assert (info.running, info.exit_code, info.oom_killed, info.pid) == (False, 137, True, 0)
    with pytest.raises(ContainerConflict):
        be.kill(cid, 1)


async def test_events_follow_state_changes_filtered_by_labels(be: FakeBackend) -> None:
    mine = be.events({"ai.backend.owner": "ag"})
    other = be.events({"ai.backend.owner": "someone-else"})
    cid = await be.create("k", config())
    await be.start(cid)
    be.kill(cid, 137, oom=True)
    await be.start(cid)
    await be.remove(cid)  # force: a running container dies with 137 first
    seen: list[ContainerEvent] = [await anext(mine) for _ in range(6)]
    assert [(e.action, e.exit_code) for e in seen] == [
        ("start", None), ("oom", None), ("die", 137), ("start", None), ("die", 137),
        ("destroy", None)]
    assert all(e.container_id == cid for e in seen)
    assert seen[0].labels == {"ai.backend.owner": "ag"}  # only ai.backend.* labels travel
    await be.close()
    assert [e async for e in mine] == []  # the stream ends with the backend
    assert [e async for e in other] == []


async def test_events_iterator_can_be_closed_early(be: FakeBackend) -> None:
    stream = be.events({})
    await stream.aclose()  # type: ignore[attr-defined]
    cid = await be.create("k", config())
    await be.start(cid)
    assert be._subscribers == []


async def test_exec_uses_the_handler_and_needs_a_running_container(be: FakeBackend) -> None:
    calls: list[tuple[list[str], str | None, dict[str, str]]] = []

    async def handler(c: FakeContainer, cmd: Sequence[str], user: str | None,
                      env: Mapping[str, str]) -> ExecResult:
        calls.append((list(cmd), user, dict(env)))
        return ExecResult(3, f"{c.name}:{' '.join(cmd)}".encode(), b"err")

    be.exec_handler = handler
    cid = await be.create("k", config())
    with pytest.raises(ContainerConflict, match="not running"):
        await be.exec(cid, ["echo", "hi"])
    await be.start(cid)
    res = await be.exec(cid, ["echo", "hi"], user="1000", env={"A": "1"})
    assert res == ExecResult(3, b"k:echo hi", b"err")
    assert calls == [(["echo", "hi"], "1000", {"A": "1"})]


async def test_exec_default_handler_says_not_found_and_timeout_is_backend_error(
        be: FakeBackend) -> None:
    cid = await be.create("k", config())
    await be.start(cid)
    res = await be.exec(cid, ["frobnicate"])
    assert res.exit_code == 127 and b"frobnicate" in res.stderr

    async def slow(c: FakeContainer, cmd: Sequence[str], user: str | None,
                   env: Mapping[str, str]) -> ExecResult:
        await asyncio.sleep(10)
        raise AssertionError("not reached")

    be.exec_handler = slow
    with pytest.raises(BackendError):
        await be.exec(cid, ["x"], timeout=0.01)


async def test_logs_tail(be: FakeBackend) -> None:
    cid = await be.create("k", config())
    be.write_log(cid, "a\nb\nc\n")
    assert await be.logs(cid) == "a\nb\nc\n"
    assert await be.logs(cid, tail=2) == "b\nc\n"
    assert await be.logs(cid, tail=0) == ""


async def test_fail_next_injects_exactly_one_failure(be: FakeBackend) -> None:
    be.fail_next("create", ContainerConflict("boom", status=409))
    with pytest.raises(ContainerConflict, match="boom"):
        await be.create("k", config())
    assert be.containers == {}  # nothing happened
    assert await be.create("k", config())
    with pytest.raises(ValueError, match="unknown backend verb"):
        be.fail_next("craete", RuntimeError())


async def test_fail_next_on_pull_and_events_raises_at_first_step(be: FakeBackend) -> None:
    be.fail_next("image_pull", BackendError("registry down"))
    with pytest.raises(BackendError, match="registry down"):
        async for _ in be.image_pull("x:1"):
            pass
    be.fail_next("events", BackendError("socket gone"))
    with pytest.raises(BackendError, match="socket gone"):
        await anext(be.events({}))


async def test_hold_keeps_the_reply_back_until_released(be: FakeBackend) -> None:
    gate = be.hold("list")
    task = asyncio.ensure_future(be.list({}))
    await gate.reached.wait()
    cid = await be.create("late", config())  # after the listing was taken
    assert not task.done()
    gate.release()
    assert cid not in [c.id for c in await task]


async def test_calls_are_recorded(be: FakeBackend) -> None:
    cid = await be.create("k", config())
    await be.start(cid)
    await be.inspect(cid)
    assert be.calls == [("create", "k"), ("start", cid), ("inspect", cid)]


# ----------------------------------------------------------------------- images
async def test_image_inspect_by_tag_id_and_default_tag(be: FakeBackend) -> None:
    info = be.add_image("busybox", labels={"x": "1"}, digests=("busybox@sha256:d1",))
    assert info.tags == ("busybox:latest",)
    assert await be.image_inspect("busybox") == info
    assert await be.image_inspect("busybox:latest") == info
    assert await be.image_inspect(info.id) == info
    assert await be.image_inspect(info.id.removeprefix("sha256:")) == info
    assert await be.image_inspect("busybox@sha256:d1") == info
    assert await be.image_inspect("busybox:2") is None
    assert {i.id for i in await be.image_list()} == {info.id, (await be.image_inspect(IMAGE)).id}  # type: ignore[union-attr]


async def test_retagging_moves_the_tag(be: FakeBackend) -> None:
    old = be.add_image("app:1", image_id="sha256:old")
    new = be.add_image("app:1", image_id="sha256:new")
    assert (await be.image_inspect("app:1")) == new
    assert be.images[old.id].tags == ()  # dangling, as after a docker build


async def test_image_remove_untags_refuses_in_use_and_reports_missing(be: FakeBackend) -> None:
    be.add_image("app:1", image_id="sha256:a")
    be.add_image("app:2", image_id="sha256:a")
    await be.image_remove("app:1")
    assert be.images["sha256:a"].tags == ("app:2",)
    cid = await be.create("k", config(image="app:2"))
    with pytest.raises(ContainerConflict, match="being used"):
        await be.image_remove("app:2")
    await be.image_remove("app:2", force=True)
    assert "sha256:a" not in be.images
    with pytest.raises(ImageNotAvailable):
        await be.image_remove("app:2")
    assert cid in be.containers


async def test_pull_streams_progress_then_stores_the_image(be: FakeBackend) -> None:
    remote = be.add_remote("reg.local/app:1", labels={"ai.backend.runtime-type": "python"},
                           layers=2, layer_size=100)
    events = [e async for e in be.image_pull("reg.local/app:1")]
    assert "error" not in str(events)
    downloading = [e["progressDetail"] for e in events if e.get("status") == "Downloading"]
    assert downloading[-1] == {"current": 100, "total": 100} and len(downloading) == 4
    assert events[-1]["status"] == "Status: Downloaded newer image for reg.local/app:1"
    info = await be.image_inspect("reg.local/app:1")
    assert info is not None and info.id == remote.info.id
    assert info.labels["ai.backend.runtime-type"] == "python"
    assert info.digests and info.digests[0].startswith("reg.local/app@sha256:")
    assert be.pulls == [("reg.local/app:1", None)]


async def test_pull_of_missing_ref_yields_an_error_event(be: FakeBackend) -> None:
    events = [e async for e in be.image_pull("reg.local/none:1")]
    assert "manifest unknown" in events[-1]["error"]
    assert await be.image_inspect("reg.local/none:1") is None


async def test_pull_checks_credentials(be: FakeBackend) -> None:
    be.add_remote("reg.local/private:1", auth={"username": "u", "password": "p"})
    denied = [e async for e in be.image_pull("reg.local/private:1")]
    assert "unauthorized" in denied[-1]["error"]
    ok = [e async for e in be.image_pull("reg.local/private:1",
                                         {"username": "u", "password": "p"})]
    assert "error" not in ok[-1]
    assert await be.image_inspect("reg.local/private:1") is not None


async def test_ping_and_close(be: FakeBackend) -> None:
    assert await be.ping()
    await be.close()
    assert not await be.ping()
