"""The log context: bound per block or per task, inherited by tasks, copied onto records."""

from __future__ import annotations

import asyncio
import json
import logging

import pytest

from berth import logctx
from berth.telemetry.logshipping import JsonFormatter


class Keep(logging.Handler):
    def __init__(self) -> None:
        super().__init__()
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


@pytest.fixture
def keep() -> logging.Logger:
    logger = logging.getLogger("berth.test.logctx")
    logger.propagate = False
    logger.setLevel(logging.DEBUG)
    logger.handlers[:] = [logctx.install(Keep())]
    return logger


def fields(logger: logging.Logger) -> list[tuple[str, str, str]]:
    handler = logger.handlers[0]
    assert isinstance(handler, Keep)
    return [(r.kernel_id, r.session_id, r.rpc_method) for r in handler.records]  # type: ignore[attr-defined]


def test_bound_nests_and_restores(keep: logging.Logger) -> None:
    keep.info("none")
    with logctx.bound(kernel_id="k1", session_id="s1"):
        keep.info("k1")
        with logctx.bound(kernel_id="k2", rpc_method=None):
            keep.info("k2 keeps s1")
        keep.info("k1 again")
    keep.info("none again")
    assert fields(keep) == [("", "", ""), ("k1", "s1", ""), ("k2", "s1", ""), ("k1", "s1", ""),
                            ("", "", "")]
    assert logctx.current() == {}


def test_extra_wins_over_the_context(keep: logging.Logger) -> None:
    with logctx.bound(kernel_id="k1"):
        keep.info("about another kernel", extra={"kernel_id": "k9"})
    assert fields(keep) == [("k9", "", "")]


def test_unknown_field_is_refused() -> None:
    with pytest.raises(ValueError, match="kernel"), logctx.bound(kernel="k1"):
        pass


async def test_tasks_inherit_and_bind_stays_in_its_task(keep: logging.Logger) -> None:
    async def request(kid: str) -> None:
        logctx.bind(kernel_id=kid, rpc_method="execute")
        await asyncio.sleep(0.01)
        keep.info("request")

    with logctx.bound(session_id="s"):
        await asyncio.gather(request("a"), request("b"))
        child = asyncio.ensure_future(asyncio.sleep(0, result=logctx.current()))
        inherited = await child
    assert sorted(fields(keep)) == [("a", "s", "execute"), ("b", "s", "execute")]
    assert inherited == {"session_id": "s"} and logctx.current() == {}


def test_json_lines_carry_the_context(keep: logging.Logger) -> None:
    with logctx.bound(kernel_id="k1", session_id="s1", rpc_method="destroy_kernel"):
        keep.warning("going")
    handler = keep.handlers[0]
    assert isinstance(handler, Keep)
    out = json.loads(JsonFormatter().format(handler.records[0]))
    assert (out["kernel_id"], out["session_id"], out["rpc_method"]) == (
        "k1", "s1", "destroy_kernel")
