"""Docker's json-file log read from its end, as `docker logs --tail N` prints it."""

from __future__ import annotations

import io
import json

import pytest

from berth.backend import jsonlog
from berth.backend.jsonlog import last_entries, tail_text


def entries(*texts: str, stream: str = "stdout") -> bytes:
    return b"".join(json.dumps({"log": t, "stream": stream, "time": "t"}).encode() + b"\n"
                    for t in texts)


@pytest.mark.parametrize("block", [7, 64, 1 << 16])
def test_last_entries_across_block_boundaries(monkeypatch: pytest.MonkeyPatch,
                                              block: int) -> None:
    monkeypatch.setattr(jsonlog, "_BLOCK", block)
    data = b"".join(f"line-{i}\n".encode() for i in range(50))
    assert last_entries(io.BytesIO(data), 3) == [b"line-47", b"line-48", b"line-49"]
    assert len(last_entries(io.BytesIO(data), 500)) == 50
    assert last_entries(io.BytesIO(data), 0) == []
    assert last_entries(io.BytesIO(b""), 5) == []


def test_tail_text_joins_output_of_both_streams_in_order() -> None:
    data = entries("a\n", "partial ", "line\n") + entries("err\n", stream="stderr")
    assert tail_text([io.BytesIO(data)], 10) == "a\npartial line\nerr\n"
    assert tail_text([io.BytesIO(data)], 2) == "line\nerr\n"


def test_tail_text_reaches_into_the_rotated_file_and_skips_cut_lines() -> None:
    current = io.BytesIO(entries("3\n", "4\n"))
    rotated = io.BytesIO(entries("1\n", "2\n") + b'{"log": "cut by a cra')
    assert tail_text([current, rotated], 4) == "2\n3\n4\n"  # the cut line counts, prints nothing
    current.seek(0)
    assert tail_text([current, io.BytesIO(entries("x\n"))], 2) == "3\n4\n"  # no need to look
