"""Framing between the agent and the in-container runner (and between runner and REPL worker).

Standard library only, Python >= 3.8: this file is imported by the runner inside the container.

A frame is a 4-byte big-endian length followed by that many bytes of UTF-8 JSON (one object).
Console output travels as JSON strings (the runner decodes UTF-8 incrementally, replacing
invalid sequences), so no frame carries raw bytes.

Agent -> runner request:  {"id": int, "op": str, ...arguments}
Runner -> agent reply:    {"id": int, "ok": true, "result": {...}}
                       or {"id": int, "ok": false, "error": {"type": str, "message": str}}
"""

from __future__ import annotations

import json
import struct

TYPE_CHECKING = False  # `typing` costs the REPL worker's start-up ~3 ms: annotations only
if TYPE_CHECKING:
    from collections.abc import Iterator
    from typing import Any

HEADER = struct.Struct(">I")
MAX_FRAME = 64 * 1024 * 1024

# Request operations the runner serves.
OP_STATUS = "status"
OP_EXECUTE = "execute"
OP_COMPLETE = "complete"
OP_INTERRUPT = "interrupt"
OP_START_SERVICE = "start_service"
OP_SHUTDOWN_SERVICE = "shutdown_service"
OP_CLAIM = "claim"  # a warm-pool runner becomes a kernel's

# The FIFO in the runner's ipc dir that the agent holds open while a container starts: the
# runner writes a byte to it once it answers `status` with ready. Only a wake-up: the kernel's
# user can write it too, so the agent confirms with `status` on the socket.
READY_FIFO = "runner.ready"

# `krunner.py WORKER_FLAG CMD_FD EVT_FD` hosts the REPL worker instead of serving.
WORKER_FLAG = "--repl-worker"

# Run statuses (Backend.AI names).
ST_CONTINUED = "continued"
ST_WAITING_INPUT = "waiting-input"
ST_FINISHED = "finished"
ST_CLEAN_FINISHED = "clean-finished"
ST_BUILD_FINISHED = "build-finished"
ST_EXEC_TIMEOUT = "exec-timeout"

# Console record kinds.
REC_STDOUT = "stdout"
REC_STDERR = "stderr"
REC_MEDIA = "media"
REC_HTML = "html"


class FrameError(ValueError):
    """A frame could not be decoded (too large or not a JSON object)."""


def encode_frame(message: dict[str, Any]) -> bytes:
    body = json.dumps(message, separators=(",", ":"), ensure_ascii=False).encode("utf-8")
    if len(body) > MAX_FRAME:
        raise FrameError("frame of %d bytes exceeds %d" % (len(body), MAX_FRAME))
    return HEADER.pack(len(body)) + body


def decode_body(body: bytes) -> dict[str, Any]:
    try:
        message = json.loads(body.decode("utf-8"))
    except (UnicodeDecodeError, ValueError) as exc:
        raise FrameError("undecodable frame: %s" % exc) from None
    if not isinstance(message, dict):
        raise FrameError("frame is not a JSON object")
    return message


class FrameDecoder:
    """Sans-I/O decoder: feed bytes as they arrive, iterate complete messages."""

    def __init__(self, max_frame: int = MAX_FRAME) -> None:
        self._buf = bytearray()
        self._max = max_frame

    def feed(self, data: bytes) -> list[dict[str, Any]]:
        self._buf += data
        return list(self._drain())

    def _drain(self) -> Iterator[dict[str, Any]]:
        while len(self._buf) >= HEADER.size:
            (size,) = HEADER.unpack_from(self._buf)
            if size > self._max:
                raise FrameError("frame of %d bytes exceeds %d" % (size, self._max))
            end = HEADER.size + size
            if len(self._buf) < end:
                return
            body = bytes(self._buf[HEADER.size:end])
            del self._buf[:end]
            yield decode_body(body)

    @property
    def pending(self) -> int:
        return len(self._buf)


def ok_reply(request_id: Any, result: dict[str, Any]) -> dict[str, Any]:
    return {"id": request_id, "ok": True, "result": result}


def error_reply(request_id: Any, kind: str, message: str) -> dict[str, Any]:
    return {"id": request_id, "ok": False, "error": {"type": kind, "message": message}}
