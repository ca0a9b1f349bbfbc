from __future__ import annotations

import json
import logging

from berth.logshipping import JsonFormatter, build_push_body


def test_push_body_groups_streams_by_kernel_and_level() -> None:
    body = build_push_body("ag", [(1, "k1", "info", "a"), (2, "", "error", "b"),
                                  (3, "k1", "info", "c")])
    assert body == {"streams": [
        {"stream": {"agent_id": "ag", "kernel_id": "k1", "level": "info"},
         "values": [["1", "a"], ["3", "c"]]},
        {"stream": {"agent_id": "ag", "kernel_id": "", "level": "error"},
         "values": [["2", "b"]]},
    ]}


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
