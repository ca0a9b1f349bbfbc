"""Backend.AI's msgpack dialect (reference §1.5): the payload inside callosum bodies.

Decoding understands every extension type Backend.AI sends; pickled ones go through the
restricted unpickler in :mod:`berth.rpc.shims`. Encoding never emits a pickle: ``Decimal``
travels as ``str``, enums as their value, paths as ``str``; ``UUID`` (ext 1) and ``datetime``
(ext 2, temporenc) keep Backend.AI's own encodings so that its tooling decodes them natively.
"""

from __future__ import annotations

import dataclasses
import enum
import os
import uuid
from collections.abc import Mapping
from datetime import datetime
from decimal import Decimal
from pathlib import PosixPath, PurePath, PurePosixPath
from typing import Any

import msgpack
import temporenc

from berth.errors import InvalidArgument, ProtocolError
from berth.rpc.shims import restricted_loads

EXT_UUID = 1
EXT_DATETIME = 2
EXT_DECIMAL = 3
EXT_POSIX_PATH = 4
EXT_PURE_POSIX_PATH = 5
EXT_ENUM = 6
EXT_IMAGE_REF = 7
EXT_RESOURCE_SLOT = 8
EXT_SLOT_NAME = 9
EXT_BINARY_SIZE = 16
EXT_AUTO_DIRECTORY_PATH = 17
PICKLED_EXTS = frozenset({EXT_DECIMAL, EXT_ENUM, EXT_IMAGE_REF, EXT_RESOURCE_SLOT,
                          EXT_SLOT_NAME, EXT_BINARY_SIZE})


def _default(obj: Any) -> Any:
    """Called by msgpack (strict_types) for anything that is not an exact builtin type."""
    if isinstance(obj, uuid.UUID):
        return msgpack.ExtType(EXT_UUID, obj.bytes)
    if isinstance(obj, datetime):
        return msgpack.ExtType(EXT_DATETIME, temporenc.packb(obj))
    if isinstance(obj, enum.Enum):
        return obj.value
    if isinstance(obj, Decimal):
        return str(obj)
    if isinstance(obj, PurePath):
        return str(obj)
    return _default_container(obj)


def _default_container(obj: Any) -> Any:
    if isinstance(obj, (tuple, set, frozenset)):
        return list(obj)
    if isinstance(obj, str):
        return str(obj)
    if isinstance(obj, bool):
        return bool(obj)
    if isinstance(obj, int):
        return int(obj)
    if isinstance(obj, float):
        return float(obj)
    if isinstance(obj, bytes):
        return bytes(obj)
    if isinstance(obj, Mapping):
        return dict(obj)
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        return {f.name: getattr(obj, f.name) for f in dataclasses.fields(obj)}
    dump = getattr(obj, "model_dump", None)
    if callable(dump):  # pydantic models
        return dump(mode="json")
    raise TypeError(f"cannot serialize {type(obj).__name__}")


def packb(value: Any) -> bytes:
    """Encode ``value`` in Backend.AI's msgpack dialect, without pickles."""
    try:
        result: bytes = msgpack.packb(value, use_bin_type=True, strict_types=True,
                                      default=_default)
    except UnicodeEncodeError as exc:  # a lone surrogate: a file name that is not UTF-8, say
        raise InvalidArgument(f"a string that is not valid UTF-8 cannot be sent: "
                              f"{exc.object[max(0, exc.start - 20):exc.end + 20]!r}") from exc
    return result


def _ext_hook(code: int, data: bytes) -> Any:
    if code == EXT_UUID:
        if len(data) != 16:
            raise ProtocolError(f"UUID ext of {len(data)} bytes")
        return uuid.UUID(bytes=data)
    if code == EXT_DATETIME:
        return temporenc.unpackb(data).datetime()
    if code in (EXT_POSIX_PATH, EXT_AUTO_DIRECTORY_PATH):
        return PosixPath(os.fsdecode(data))
    if code == EXT_PURE_POSIX_PATH:
        return PurePosixPath(os.fsdecode(data))
    if code in PICKLED_EXTS:
        return restricted_loads(data)
    raise ProtocolError(f"unknown msgpack ext type {code}", ext_code=code)


def unpackb(data: bytes) -> Any:
    """Decode Backend.AI msgpack; any malformed input raises :class:`ProtocolError`."""
    try:
        return msgpack.unpackb(data, raw=False, strict_map_key=False, use_list=True,
                               ext_hook=_ext_hook)
    except ProtocolError:
        raise
    except Exception as exc:  # msgpack raises many types on garbage
        raise ProtocolError(f"bad msgpack payload: {type(exc).__name__}: {exc}") from exc
