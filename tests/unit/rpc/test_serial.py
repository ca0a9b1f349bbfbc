from __future__ import annotations

import dataclasses
import enum
import os
import pickle
import sys
import types
import uuid
from collections import UserDict, UserString
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import PosixPath, PurePosixPath

import msgpack
import pytest

from berth.errors import InvalidArgument, ProtocolError
from berth.rpc import serial


def _ext(code: int, data: bytes) -> bytes:
    return msgpack.packb(msgpack.ExtType(code, data))


@pytest.fixture
def bai_modules(monkeypatch: pytest.MonkeyPatch) -> types.SimpleNamespace:
    """Stand-ins for ai.backend.common.{types,docker} so that real pickles can be made."""
    tmod = types.ModuleType("ai.backend.common.types")
    dmod = types.ModuleType("ai.backend.common.docker")

    class SessionTypes(enum.StrEnum):
        INTERACTIVE = "interactive"

    class MountPermission(enum.StrEnum):
        READ_ONLY = "ro"

    class ResourceSlot(UserDict):  # type: ignore[type-arg]
        pass

    class SlotName(UserString):
        pass

    class BinarySize(int):
        pass

    @dataclasses.dataclass(frozen=True)
    class ImageRef:
        name: str
        project: str
        tag: str
        registry: str
        architecture: str
        is_local: bool

    for cls in (SessionTypes, MountPermission, ResourceSlot, SlotName, BinarySize):
        cls.__module__ = tmod.__name__
        cls.__qualname__ = cls.__name__
        setattr(tmod, cls.__name__, cls)
    ImageRef.__module__, ImageRef.__qualname__ = dmod.__name__, "ImageRef"
    dmod.ImageRef = ImageRef  # type: ignore[attr-defined]
    for parent in ("ai", "ai.backend", "ai.backend.common"):
        monkeypatch.setitem(sys.modules, parent, types.ModuleType(parent))
    monkeypatch.setitem(sys.modules, tmod.__name__, tmod)
    monkeypatch.setitem(sys.modules, dmod.__name__, dmod)
    return types.SimpleNamespace(**{c.__name__: c for c in (
        SessionTypes, MountPermission, ResourceSlot, SlotName, BinarySize, ImageRef)})


def test_plain_values_roundtrip_and_tuples_become_lists() -> None:
    value = {"a": (1, 2), "b": b"\x00", "c": None, "d": 1.5, "e": {"x": [True]}}
    assert serial.unpackb(serial.packb(value)) == {**value, "a": [1, 2]}


def test_uuid_and_datetime_use_backendai_ext_types() -> None:
    kid = uuid.uuid4()
    when = datetime(2024, 5, 6, 7, 8, 9, 123456, tzinfo=UTC)
    raw = serial.packb([kid, when])
    assert msgpack.unpackb(raw, strict_map_key=False)[0] == msgpack.ExtType(1, kid.bytes)
    got_kid, got_when = serial.unpackb(raw)
    assert got_kid == kid and got_when == when


def test_berth_never_sends_pickles() -> None:
    class Color(enum.Enum):
        RED = "red"

    raw = serial.packb({"d": Decimal("1.50"), "e": Color.RED, "p": PosixPath("/x")})
    assert msgpack.unpackb(raw) == {"d": "1.50", "e": "red", "p": "/x"}


def test_path_ext_types_decode() -> None:
    assert serial.unpackb(_ext(4, os.fsencode("/a"))) == PosixPath("/a")
    assert serial.unpackb(_ext(5, b"/b")) == PurePosixPath("/b")
    assert serial.unpackb(_ext(17, b"/c")) == PosixPath("/c")


def test_decimal_pickle_decodes() -> None:
    assert serial.unpackb(_ext(3, pickle.dumps(Decimal("2.5"), protocol=5))) == Decimal("2.5")


def test_backendai_pickles_become_plain_data(bai_modules: types.SimpleNamespace) -> None:
    ns = bai_modules
    ref = ns.ImageRef("python", "stable", "3.11", "cr.backend.ai", "x86_64", False)
    kid = uuid.uuid4()
    packed = msgpack.packb({
        "enum": msgpack.ExtType(6, pickle.dumps(ns.SessionTypes.INTERACTIVE, protocol=5)),
        "perm": msgpack.ExtType(6, pickle.dumps(ns.MountPermission.READ_ONLY, protocol=5)),
        "refs": {msgpack.ExtType(1, kid.bytes): msgpack.ExtType(7, pickle.dumps(ref, protocol=5))},
        "slots": msgpack.ExtType(8, pickle.dumps(
            ns.ResourceSlot({"cpu": Decimal(2), "mem": Decimal(1024)}), protocol=5)),
        "slot": msgpack.ExtType(9, pickle.dumps(ns.SlotName("cuda.device"), protocol=5)),
        "size": msgpack.ExtType(16, pickle.dumps(ns.BinarySize(4096), protocol=5)),
    })
    got = serial.unpackb(packed)
    assert got["enum"] == "interactive" and got["perm"] == "ro"
    assert got["refs"][kid]["name"] == "python" and got["refs"][kid]["registry"] == "cr.backend.ai"
    assert got["slots"] == {"cpu": "2", "mem": "1024"}
    assert got["slot"] == "cuda.device" and got["size"] == 4096


class Evil:
    def __reduce__(self) -> tuple[object, tuple[str]]:
        return (os.system, ("touch /tmp/berth-pwned",))


@pytest.mark.parametrize("code", [3, 6, 7, 8, 9, 16])
def test_foreign_globals_in_pickles_are_refused_not_executed(code: int) -> None:
    with pytest.raises(ProtocolError, match="not allowed"):
        serial.unpackb(_ext(code, pickle.dumps(Evil())))
    assert not os.path.exists("/tmp/berth-pwned")


@pytest.mark.parametrize("data", [b"", b"\x80\x05garbage", b"\x80\x05N."[:-1]])
def test_broken_pickles_are_protocol_errors(data: bytes) -> None:
    with pytest.raises(ProtocolError):
        serial.unpackb(_ext(6, data))


def test_unknown_ext_and_bad_uuid_are_protocol_errors() -> None:
    with pytest.raises(ProtocolError):
        serial.unpackb(_ext(42, b"x"))
    with pytest.raises(ProtocolError):
        serial.unpackb(_ext(1, b"short"))
    with pytest.raises(ProtocolError):
        serial.unpackb(_ext(2, b"\xff"))


def test_a_string_that_is_not_utf8_is_a_typed_error() -> None:
    # os.listdir's name for non-UTF-8 bytes holds a lone surrogate: msgpack cannot send it
    with pytest.raises(InvalidArgument, match="not valid UTF-8"):
        serial.packb({"name": os.fsdecode(b"caf\xe9")})
