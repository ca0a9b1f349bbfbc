"""callosum 1.0.3 framing, sans I/O (reference §1.4).

Client → server multipart: ``[b"UPPER", header, body]`` (a ROUTER sees the peer id first);
``[b"PING", x, y]`` is answered ``[b"PONG", x, y]``. ``header`` is plain msgpack of
``{type, meth, okey, seq, zip}``; ``body`` is plain msgpack of ``{"meta": bytes, "body":
bytes|None}`` where the inner ``body`` is Backend.AI msgpack (:mod:`berth.rpc.serial`) for
FUNCTION and RESULT, and ``meta`` is ``msgpack([name, repr, traceback])`` for FAILURE/ERROR.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from typing import Any

import msgpack

from berth.errors import ProtocolError
from berth.rpc import serial

PING = b"PING"
PONG = b"PONG"
UPPER = b"UPPER"


class MsgType(enum.IntEnum):
    NULL = 0
    FUNCTION = 1
    RESULT = 2
    FAILURE = 3
    ERROR = 4
    CANCEL = 5
    CANCELLED = 6


@dataclass(frozen=True, slots=True)
class Header:
    type: MsgType
    meth: str
    okey: str | bytes  # echoed back exactly: callosum matches replies on (meth, okey, seq)
    seq: int
    zip: bool = False


@dataclass(frozen=True, slots=True)
class Request:
    """A decoded FUNCTION call."""

    header: Header
    args: list[Any]
    kwargs: dict[str, Any]
    metadata: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class Reply:
    """A decoded server reply: a RESULT value, or FAILURE/ERROR/CANCELLED with error info."""

    header: Header
    value: Any = None
    error: tuple[str, str, str] | None = None


def _plain_pack(value: Any) -> bytes:
    result: bytes = msgpack.packb(value, use_bin_type=True)
    return result


def _plain_unpack(data: bytes, what: str) -> Any:
    try:
        return msgpack.unpackb(data, raw=False, use_list=True)
    except Exception as exc:  # garbage frames raise many types
        raise ProtocolError(f"bad {what}: {type(exc).__name__}: {exc}") from exc


def encode_header(header: Header) -> bytes:
    return _plain_pack({"type": int(header.type), "meth": header.meth, "okey": header.okey,
                        "seq": header.seq, "zip": header.zip})


def decode_header(raw: bytes) -> Header:
    data = _plain_unpack(raw, "header")
    if not isinstance(data, dict):
        raise ProtocolError("header is not a map")
    try:
        msgtype = MsgType(data["type"])
        meth, okey, seq, zipped = data["meth"], data.get("okey", ""), data["seq"], data["zip"]
    except (KeyError, ValueError, TypeError) as exc:
        raise ProtocolError(f"bad header: {exc!r}") from exc
    if not isinstance(meth, str) or not isinstance(seq, int) or not isinstance(okey, str | bytes):
        raise ProtocolError("bad header field types")
    return Header(msgtype, meth, okey, seq, bool(zipped))


def _decode_envelope(raw: bytes, header: Header) -> tuple[bytes, Any]:
    if header.zip:
        raise ProtocolError("compressed (snappy) bodies are not supported")
    data = _plain_unpack(raw, "body envelope")
    if not isinstance(data, dict) or "meta" not in data or "body" not in data:
        raise ProtocolError("body envelope is not a {meta, body} map")
    meta = data["meta"]
    if not isinstance(meta, bytes):
        raise ProtocolError("envelope meta is not bytes")
    return meta, data["body"]


def _encode_envelope(meta: bytes, body: bytes | None) -> bytes:
    """msgpack of ``{"meta": meta, "body": body}``, byte for byte what ``packb`` makes."""
    return b"".join((b"\x82\xa4meta", _bin(meta), b"\xa4body",
                     b"\xc0" if body is None else _bin(body)))


def _bin(data: bytes) -> bytes:
    """msgpack's bin family (use_bin_type): the shortest length prefix, then the bytes."""
    size = len(data)
    if size < 0x100:
        return b"\xc4" + size.to_bytes(1, "big") + data
    if size < 0x10000:
        return b"\xc5" + size.to_bytes(2, "big") + data
    return b"\xc6" + size.to_bytes(4, "big") + data


_NO_META = _plain_pack([])  # a RESULT's meta


def decode_request(raw_header: bytes, raw_body: bytes) -> Request:
    """Decode a FUNCTION message; raise :class:`ProtocolError` on any malformed part."""
    header = decode_header(raw_header)
    if header.type is not MsgType.FUNCTION:
        raise ProtocolError(f"expected FUNCTION, got {header.type.name}")
    return request_from_header(header, raw_body)


def request_from_header(header: Header, raw_body: bytes) -> Request:
    _, inner = _decode_envelope(raw_body, header)
    if inner is None:  # callosum: a call without a body means "no arguments"
        return Request(header, [], {})
    if not isinstance(inner, bytes):
        raise ProtocolError("request body is not bytes")
    payload = serial.unpackb(inner)
    if not isinstance(payload, dict):
        raise ProtocolError("request payload is not a map")
    args, kwargs = payload.get("args", []), payload.get("kwargs", {})
    metadata = payload.get("metadata") or {}
    if not isinstance(args, list) or not isinstance(kwargs, dict):
        raise ProtocolError("request args/kwargs have the wrong shape")
    if not all(isinstance(k, str) for k in kwargs) or not isinstance(metadata, dict):
        raise ProtocolError("request kwargs keys must be strings")
    return Request(header, args, kwargs, metadata)


def encode_request(meth: str, seq: int, args: list[Any], kwargs: dict[str, Any],
                   okey: str = "") -> tuple[bytes, bytes]:
    header = Header(MsgType.FUNCTION, meth, okey, seq)
    inner = serial.packb({"args": list(args), "kwargs": kwargs})
    return encode_header(header), _encode_envelope(b"", inner)


def _reply_header(request: Header, msgtype: MsgType) -> Header:
    return Header(msgtype, request.meth, request.okey, request.seq)


def encode_result(request: Header, value: Any) -> tuple[bytes, bytes]:
    """Encode a RESULT; raises TypeError when ``value`` cannot be serialized."""
    inner = serial.packb(value)
    return (encode_header(_reply_header(request, MsgType.RESULT)),
            _encode_envelope(_NO_META, inner))


def encode_error(request: Header, msgtype: MsgType, name: str, representation: str,
                 traceback: str = "") -> tuple[bytes, bytes]:
    """Encode a FAILURE (handler error) or ERROR (protocol error) reply."""
    meta = _plain_pack([name, representation, traceback])
    return encode_header(_reply_header(request, msgtype)), _encode_envelope(meta, None)


def encode_cancel(meth: str, seq: int, okey: str = "") -> tuple[bytes, bytes]:
    """Client → server: stop working on request (meth, okey, seq)."""
    return encode_header(Header(MsgType.CANCEL, meth, okey, seq)), _encode_envelope(b"", None)


def encode_cancelled(request: Header) -> tuple[bytes, bytes]:
    return encode_header(_reply_header(request, MsgType.CANCELLED)), _encode_envelope(b"", None)


def decode_reply(raw_header: bytes, raw_body: bytes) -> Reply:
    header = decode_header(raw_header)
    meta, inner = _decode_envelope(raw_body, header)
    if header.type is MsgType.RESULT:
        if not isinstance(inner, bytes):
            raise ProtocolError("result body is not bytes")
        return Reply(header, value=serial.unpackb(inner))
    if header.type in (MsgType.FAILURE, MsgType.ERROR):
        info = _plain_unpack(meta, "error metadata")
        if not isinstance(info, list) or len(info) != 3 or not all(
                isinstance(x, str) for x in info):
            raise ProtocolError("error metadata is not [name, repr, traceback]")
        return Reply(header, error=(info[0], info[1], info[2]))
    if header.type is MsgType.CANCELLED:
        return Reply(header, error=("CancelledError", "cancelled by the server", ""))
    raise ProtocolError(f"unexpected reply type {header.type.name}")


def header_or_none(raw_header: bytes) -> Header | None:
    """Best-effort header decode, so an error reply can be addressed; None if hopeless."""
    try:
        return decode_header(raw_header)
    except ProtocolError:
        return None
