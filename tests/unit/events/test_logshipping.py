from __future__ import annotations

import json
import logging

from berth import logctx
from berth.telemetry.logshipping import (
    ContainerOutputShipper,
    JsonFormatter,
    build_push_body,
    record_labels,
)


def test_push_body_groups_streams_by_labels() -> None:
    k1 = (("kernel_id", "k1"), ("level", "info"))
    none = (("kernel_id", ""), ("level", "error"))
    body = build_push_body("ag", [(1, k1, "a"), (2, none, "b"), (3, k1, "c")])
    assert body == {"streams": [
        {"stream": {"agent_id": "ag", "kernel_id": "k1", "level": "info"},
         "values": [["1", "a"], ["3", "c"]]},
        {"stream": {"agent_id": "ag", "kernel_id": "", "level": "error"},
         "values": [["2", "b"]]},
    ]}


def test_record_labels_name_the_bound_kernel() -> None:
    handler = logctx.install(logging.NullHandler())
    rec = logging.LogRecord("berth.x", logging.WARNING, __file__, 1, "m", None, None)
    with logctx.bound(kernel_id="k7", session_id="s7"):
        handler.filter(rec)
    assert record_labels(rec) == (("kernel_id", "k7"), ("level", "warning"),
                                  ("source", "agent"))
    bare = logging.LogRecord("berth.x", logging.INFO, __file__, 1, "m", None, None)
    handler.filter(bare)
    assert record_labels(bare) == (("kernel_id", ""), ("level", "info"), ("source", "agent"))


async def test_container_output_is_one_stream_per_kernel_in_line_order() -> None:
    shipper = ContainerOutputShipper("http://127.0.0.1:9", "ag", clock=lambda: 100.0,
                                     flush_interval=60)
    try:
        await shipper.ship("k1", "c1", "first\nsecond\n")
        entries = [shipper.pusher._queue.get_nowait() for _ in range(2)]
    finally:
        await shipper.close()
    labels = (("kernel_id", "k1"), ("level", "info"), ("source", "container"))
    assert entries == [(100 * 10**9, labels, "first"), (100 * 10**9 + 1, labels, "second")]


def test_json_formatter_includes_extras_and_exception() -> None:
    rec = logging.LogRecord("berth.x", logging.ERROR, __file__, 1, "boom %s", ("now",), None)
    rec.kernel_id = "k9"
    try:
        raise ValueError("bad")
    except ValueError:
        import sys
        rec.exc_info = sys.exc_info()
    out = json.loads(JsonFormatter().format(rec))
    assert out["message"] == "boom now" and out["level"] == "ERROR"
    assert out["logger"] == "berth.x" and out["kernel_id"] == "k9"
    assert "ValueError: bad" in out["exception"]
    assert out["time"].endswith("+00:00")
