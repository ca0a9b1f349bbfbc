from __future__ import annotations

import msgpack
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from berth.errors import ProtocolError
from berth.rpc import codec
from berth.rpc.codec import Header, MsgType


def test_request_roundtrip_keeps_args_kwargs_and_tolerates_metadata() -> None:
    raw_header, raw_body = codec.encode_request("ping", 7, ["hi"], {"agent_id": None})
    req = codec.decode_request(raw_header, raw_body)
    assert (req.header.meth, req.header.seq, req.header.type) == ("ping", 7, MsgType.FUNCTION)
    assert req.args == ["hi"] and req.kwargs == {"agent_id": None}


def test_manager_metadata_key_is_accepted() -> None:
    inner = msgpack.packb({"args": [], "kwargs": {}, "metadata": {"request_id": "r1"}})
    body = msgpack.packb({"meta": b"", "body": inner})
    header = codec.encode_header(Header(MsgType.FUNCTION, "health", "", 1))
    assert codec.decode_request(header, body).metadata == {"request_id": "r1"}


def test_header_fields_match_callosum() -> None:
    raw = codec.encode_header(Header(MsgType.RESULT, "m", "", 3))
    assert msgpack.unpackb(raw) == {"type": 2, "meth": "m", "okey": "", "seq": 3, "zip": False}


def test_bytes_order_key_is_echoed_as_bytes() -> None:
    header = msgpack.packb({"type": 1, "meth": "ping", "okey": b"", "seq": 0, "zip": False},
                           use_bin_type=True)
    decoded = codec.decode_header(header)
    reply_header, _ = codec.encode_result(decoded, "pong")
    assert msgpack.unpackb(reply_header, raw=False)["okey"] == b""


def test_result_and_failure_replies_decode() -> None:
    h = Header(MsgType.FUNCTION, "x", "", 1)
    ok = codec.decode_reply(*codec.encode_result(h, {"a": [1, 2]}))
    assert ok.value == {"a": [1, 2]} and ok.error is None
    bad = codec.decode_reply(*codec.encode_error(h, MsgType.FAILURE, "E", "E()", "tb"))
    assert bad.header.type is MsgType.FAILURE and bad.error == ("E", "E()", "tb")
    meta = msgpack.unpackb(msgpack.unpackb(codec.encode_error(h, MsgType.ERROR, "E", "r")[1])
                           ["meta"])
    assert meta == ["E", "r", ""]


@pytest.mark.parametrize("header", [
    b"", b"\xc1", b"\x92\x01", msgpack.packb([1, 2]), msgpack.packb({"type": 99}),
    msgpack.packb({"type": 1, "meth": 5, "okey": "", "seq": 1, "zip": False}),
    msgpack.packb({"type": 1, "meth": "m", "okey": "", "seq": "x", "zip": False}),
])
def test_bad_headers_raise_protocol_error(header: bytes) -> None:
    with pytest.raises(ProtocolError):
        codec.decode_header(header)


@pytest.mark.parametrize("body", [
    b"", b"\x81", msgpack.packb({"meta": b""}), msgpack.packb({"meta": "s", "body": b""}),
    msgpack.packb({"meta": b"", "body": 5}),
    msgpack.packb({"meta": b"", "body": msgpack.packb([1])}),
    msgpack.packb({"meta": b"", "body": msgpack.packb({"args": 1, "kwargs": {}})}),
    msgpack.packb({"meta": b"", "body": msgpack.packb({"args": [], "kwargs": {1: 2}})}),
    msgpack.packb({"meta": b"", "body": msgpack.packb({"args": [1, 2, 3]})[:-1]}),
])
def test_bad_bodies_raise_protocol_error(body: bytes) -> None:
    header = codec.encode_header(Header(MsgType.FUNCTION, "m", "", 1))
    with pytest.raises(ProtocolError):
        codec.decode_request(header, body)


def test_compressed_bodies_are_refused() -> None:
    header = codec.encode_header(Header(MsgType.FUNCTION, "m", "", 1, zip=True))
    with pytest.raises(ProtocolError, match="compressed"):
        codec.decode_request(header, msgpack.packb({"meta": b"", "body": b""}))


@settings(max_examples=300)
@given(st.binary(max_size=200), st.binary(max_size=200))
def test_random_bytes_only_ever_raise_protocol_error(header: bytes, body: bytes) -> None:
    try:
        codec.decode_request(header, body)
    except ProtocolError:
        pass


@settings(max_examples=200)
@given(st.integers(min_value=0, max_value=60))
def test_every_truncation_of_a_valid_request_is_rejected_or_parsed(cut: int) -> None:
    raw_header, raw_body = codec.encode_request("ping", 1, ["x" * 20], {"agent_id": "a"})
    if cut >= len(raw_body):
        return
    with pytest.raises(ProtocolError):
        codec.decode_request(raw_header, raw_body[:cut])


@pytest.mark.parametrize("size", [0, 1, 255, 256, 65535, 65536, 70000])
def test_envelope_is_byte_for_byte_what_msgpack_makes(size: int) -> None:
    import msgpack

    from berth.rpc.codec import _encode_envelope
    body = b"x" * size
    for meta in (b"", b"\x90", b"m" * 300):
        assert _encode_envelope(meta, body) == msgpack.packb({"meta": meta, "body": body},
                                                             use_bin_type=True)
        assert _encode_envelope(meta, None) == msgpack.packb({"meta": meta, "body": None},
                                                             use_bin_type=True)
