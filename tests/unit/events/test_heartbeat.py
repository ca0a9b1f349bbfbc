from __future__ import annotations

import asyncio
from collections.abc import Mapping, Sequence

import pytest

from berth.errors import EventBusError
from berth.events import AgentHeartbeatEvent, AgentInfo, Heartbeat, RecordingEmitter


def info() -> AgentInfo:
    return AgentInfo(ip="127.0.0.1", region="r", scaling_group="default",
                     addr="tcp://127.0.0.1:6011", public_key="pk", public_host="127.0.0.1",
                     available_resource_slots=[], slot_key_and_units={}, version="0",
                     compute_plugins={}, architecture="x86_64")


class Store:
    def __init__(self, fail: bool = False) -> None:
        self.writes: list[list[dict[str, str]]] = []
        self.fail = fail

    async def write_installed_images(self, images: Sequence[Mapping[str, str]]) -> None:
        if self.fail:
            raise EventBusError("down")
        self.writes.append([dict(i) for i in images])


async def get_info() -> AgentInfo:
    return info()


async def get_images() -> list[dict[str, str]]:
    return [{"canonical": "x:1", "digest": "sha256:1", "architecture": "x86_64"}]


async def test_beats_at_period_and_writes_images_after_each() -> None:
    em, store = RecordingEmitter(), Store()
    loop = asyncio.get_running_loop()
    t0 = loop.time()
    async with Heartbeat(em, get_info, 0.1, images=get_images, store=store) as hb:
        while hb.beats < 4:
            await asyncio.sleep(0.01)
    elapsed = loop.time() - t0
    assert 0.28 <= elapsed < 0.6
    assert all(isinstance(e, AgentHeartbeatEvent) for e in em.events)
    assert len(store.writes) == hb.beats
    assert store.writes[0][0]["canonical"] == "x:1"


async def test_image_write_failure_does_not_stop_heartbeats() -> None:
    em = RecordingEmitter()
    async with Heartbeat(em, get_info, 0.02, images=get_images, store=Store(fail=True)) as hb:
        while hb.beats < 3:
            await asyncio.sleep(0.01)
    assert len(em.events) >= 3


def test_interval_must_be_positive() -> None:
    with pytest.raises(ValueError):
        Heartbeat(RecordingEmitter(), get_info, 0)
