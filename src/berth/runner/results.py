"""Shape the runner's replies into Backend.AI's `execute` result (NextResult), pure.

API version 1: {runId, status, exitCode, options, files, stdout, stderr, media, html}.
API version >= 2: {runId, status, exitCode, options, files, console: [(type, data)]} with
consecutive stdout/stderr records merged and media as ("media", (mime, data)).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from berth.runner.kernel_side import protocol

ConsoleItem = tuple[str, Any]
WORKER_EXIT = "workerExit"


def _base(reply: Mapping[str, Any]) -> dict[str, Any]:
    result = {
        "runId": reply.get("runId"),
        "status": reply.get("status", protocol.ST_CONTINUED),
        "exitCode": reply.get("exitCode"),
        "options": reply.get("options"),
        "files": [],
    }
    if reply.get("workerExit"):
        # for the agent only (the facade takes it out): how the code worker died in this run
        result[WORKER_EXIT] = dict(reply["workerExit"])
    return result


def merge_console(records: Sequence[Sequence[Any]]) -> list[ConsoleItem]:
    console: list[ConsoleItem] = []
    for kind, data in records:
        if kind == protocol.REC_MEDIA:
            console.append((kind, (data[0], data[1])))
        elif console and kind in (protocol.REC_STDOUT, protocol.REC_STDERR) and console[-1][0] == kind:
            console[-1] = (kind, console[-1][1] + data)
        else:
            console.append((kind, data))
    return console


def _v1_fields(records: Sequence[Sequence[Any]]) -> dict[str, Any]:
    stdout = "".join(d for k, d in records if k == protocol.REC_STDOUT)
    stderr = "".join(d for k, d in records if k == protocol.REC_STDERR)
    media = [(d[0], d[1]) for k, d in records if k == protocol.REC_MEDIA]
    html = [d for k, d in records if k == protocol.REC_HTML]
    return {"stdout": stdout, "stderr": stderr, "media": media, "html": html}


def next_result(reply: Mapping[str, Any], api_version: int) -> dict[str, Any]:
    records = reply.get("records") or []
    result = _base(reply)
    if api_version == 1:
        result.update(_v1_fields(records))
    else:
        result["console"] = merge_console(records)
    return result

