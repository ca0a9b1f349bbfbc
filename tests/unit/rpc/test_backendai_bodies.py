"""Request bodies made by the real Backend.AI 26.9.6 manager's msgpack decode into plain data.

The fixture holds the bytes that ``ai.backend.common.msgpack.packb`` produced for the calls the
manager really makes (the pickled ImageRef with its PlatformTagSet, the enum that moved to
``event_types.kernel.types`` in 26.9, LabelName dict keys).  The compat tier checks the same
live against a running agent; this keeps the decoding honest without Docker.
"""

from __future__ import annotations

import json
import pickle
import pickletools
import sys
import uuid
from pathlib import Path
from typing import Any

import msgpack
import pytest

from berth.errors import ProtocolError
from berth.rpc import serial, shims

FIXTURE = Path(__file__).parents[2] / "fixtures" / "backendai" / "rpc_bodies.json"
BODIES: dict[str, bytes] = {
    name: bytes.fromhex(raw) for name, raw in json.loads(FIXTURE.read_text())["bodies"].items()
}


def _decode(name: str) -> dict[str, Any]:
    body = serial.unpackb(BODIES[name])
    assert isinstance(body, dict)
    return body


def test_create_kernels_image_refs_with_platform_tags_become_plain_dicts() -> None:
    body = _decode("create_kernels")
    _session_id, kernel_ids, configs, cluster_info, refs = body["args"]
    (kid,) = kernel_ids
    (ref,) = refs.values()
    assert list(refs) == [uuid.UUID(kid)]
    assert ref == {"name": "python", "project": "stable", "tag": "3.9-ubuntu20.04",
                   "registry": "cr.backend.ai", "architecture": "x86_64", "is_local": False,
                   "tag_set": ["3.9", {"ubuntu": "20.04"}]}
    assert configs[0]["session_type"] == "interactive"
    assert configs[0]["auto_pull"] == "digest"
    assert configs[0]["image"]["auto_pull"] == "digest"
    assert cluster_info["ssh_keypair"] == {"public_key": "ssh-rsa AAA", "private_key": "PEM"}


def test_destroy_kernel_reason_from_the_26_9_module() -> None:
    body = _decode("destroy_kernel")
    assert body["args"][2] == "user-requested"
    assert body["kwargs"] == {"suppress_events": False, "agent_id": "i-ag1"}


def test_commit_label_name_keys_become_label_strings() -> None:
    kwargs = _decode("commit")["kwargs"]
    assert kwargs["extra_labels"] == {"ai.backend.customized-image.owner": "user:1"}


def test_push_image_ref_is_plain() -> None:
    image_ref, registry = _decode("push_image")["args"]
    assert image_ref["name"] == "python" and image_ref["tag_set"][1] == {"ubuntu": "20.04"}
    assert registry["url"] == "https://r"


@pytest.mark.parametrize("name", sorted(BODIES))
def test_every_manager_body_decodes_without_importing_backendai(name: str) -> None:
    _decode(name)
    assert not any(m == "ai" or m.startswith("ai.") for m in sys.modules)


def _pickled_classes(data: bytes) -> set[tuple[str, str]]:
    """The (module, name) pairs a pickle would look up: STACK_GLOBAL takes the last two
    values pushed, strings or memo references to strings."""
    found: set[tuple[str, str]] = set()
    pushed: list[object] = []
    memo: list[object] = []
    for op, arg, _pos in pickletools.genops(data):
        if isinstance(arg, str) and "UNICODE" in op.name:
            pushed.append(arg)
        elif op.name in ("BINGET", "LONG_BINGET"):
            pushed.append(memo[int(arg)])  # type: ignore[arg-type]
        elif op.name == "MEMOIZE":
            memo.append(pushed[-1] if pushed else None)
        elif op.name == "STACK_GLOBAL":
            module, name = pushed[-2], pushed[-1]
            found.add((str(module), str(name)))
            pushed.append(None)
        else:
            pushed.append(None)
    return found


def test_the_allow_list_names_exactly_what_the_manager_pickles_and_nothing_builtin() -> None:
    pickled: set[tuple[str, str]] = set()
    for raw in BODIES.values():
        def hook(code: int, data: bytes) -> None:
            if code in (3, 6, 7, 8, 9, 16):
                pickled.update(_pickled_classes(data))
        msgpack.unpackb(raw, ext_hook=lambda c, d: hook(c, d), strict_map_key=False)
    assert {("ai.backend.common.docker", "ImageRef"), ("ai.backend.common.docker", "PlatformTagSet"),
            ("ai.backend.common.events.event_types.kernel.types", "KernelLifecycleEventReason"),
            ("ai.backend.common.docker", "LabelName")} <= pickled
    assert pickled <= set(shims.ALLOWED)
    # Nothing that can run code: only our shims, Decimal and the enum-only getattr.
    assert not any(mod in ("os", "posix", "subprocess", "builtins") and name != "getattr"
                   for mod, name in shims.ALLOWED)


@pytest.mark.parametrize("module,name", [
    ("ai.backend.common.docker", "Registry"),           # a real module, a class not listed
    ("ai.backend.common.nowhere", "ImageRef"),          # a listed name under another module
    ("ai.backend.common.types", "PlatformTagSet"),      # a listed class under the wrong module
    ("builtins", "eval"),
])
def test_unlisted_classes_are_refused_by_name_without_import(module: str, name: str) -> None:
    data = (b"\x80\x05" + pickle.dumps(module, protocol=5)[2:-1]
            + pickle.dumps(name, protocol=5)[2:-1] + b"\x93)\x81.")
    with pytest.raises(ProtocolError, match="not allowed"):
        serial.unpackb(msgpack.packb(msgpack.ExtType(7, data)))
    assert module not in sys.modules or module == "builtins"


def test_getattr_is_only_allowed_on_enum_shims() -> None:
    data = (b"\x80\x05" + pickle.dumps("builtins", protocol=5)[2:-1]
            + pickle.dumps("getattr", protocol=5)[2:-1] + b"\x93"
            + pickle.dumps("decimal", protocol=5)[2:-1] + pickle.dumps("Decimal", protocol=5)[2:-1]
            + b"\x93" + pickle.dumps("__init__", protocol=5)[2:-1] + b"\x86R.")
    with pytest.raises(ProtocolError):
        serial.unpackb(msgpack.packb(msgpack.ExtType(6, data)))
