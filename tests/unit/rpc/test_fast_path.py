"""The server's fast path: a quick call answered in the loop turn that read it (no task), its
log line and metrics after the reply; a call that waits goes on in a task, as a Task would."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest

from berth import logctx
from berth.rpc import HandlerRegistry, RPCServer, codec
from berth.rpc.codec import MsgType
from berth.rpc.server import _resume


class Recorder:
    """A server transport that records, in order, what is sent and what is logged."""

    bound_endpoint = "recorder://"

    def __init__(self) -> None:
        self.order: list[str] = []
        self.sent: list[list[bytes]] = []
        self.inbox: asyncio.Queue[list[bytes]] = asyncio.Queue()

    async def bind(self) -> None:
        return None

    async def serve(self, on_frames: Callable[[list[bytes]], None]) -> None:
        while True:
            on_frames(await self.inbox.get())

    def send(self, frames: list[bytes]) -> None:
        self.order.append("reply")
        self.sent.append(frames)

    async def close(self) -> None:
        return None


class Facade:
    def __init__(self) -> None:
        self.gate = asyncio.Event()
        self.seen: list[dict[str, str]] = []

    async def ping(self, msg: str = "ping", agent_id: str | None = None) -> str:
        self.seen.append(dict(logctx.current()))
        return msg

    async def check_running(self, kernel_id: str, agent_id: str | None = None) -> bool:
        await self.gate.wait()
        return True

    async def destroy_kernel(self, kernel_id: str, session_id: str | None = None,
                             agent_id: str | None = None) -> None:
        self.seen.append(dict(logctx.current()))


def request(method: str, seq: int, *args: Any) -> list[bytes]:
    return [b"peer", codec.UPPER, *codec.encode_request(method, seq, list(args), {})]


def result(frames: list[bytes]) -> Any:
    reply = codec.decode_reply(frames[2], frames[3])
    assert reply.header.type is MsgType.RESULT, reply
    return reply.value


@pytest.fixture
async def served() -> AsyncIterator[tuple[RPCServer, Recorder, Facade, list[str]]]:
    transport, facade, metrics = Recorder(), Facade(), []
    server = RPCServer(HandlerRegistry(facade), "127.0.0.1:0", plain=True, transport=transport,
                       on_request=lambda method, duration, exc: transport.order.append(
                           f"metric {method}"))
    await server.start()
    yield server, transport, facade, metrics
    await server.close()


async def test_a_quick_call_is_answered_in_the_turn_that_read_it(
        served: tuple[RPCServer, Recorder, Facade, list[str]]) -> None:
    server, transport, facade, _ = served
    await asyncio.sleep(0)  # the serve loop is running
    tasks_before = asyncio.all_tasks()
    server._on_frames(request("ping", 1, "hi"))  # what the serve loop does with a message
    assert [result(f) for f in transport.sent] == ["hi"]  # answered before returning
    assert not server._inflight
    assert facade.seen == [{"rpc_method": "ping"}]  # bound for the call only
    assert logctx.current() == {}
    # the task its first step ran as has nothing left to do: it ends on its first turn
    [task] = asyncio.all_tasks() - tasks_before
    await task
    assert facade.seen == [{"rpc_method": "ping"}] and len(transport.sent) == 1


async def test_a_first_step_runs_as_the_task_that_goes_on_with_the_call(
        served: tuple[RPCServer, Recorder, Facade, list[str]]) -> None:
    """A scope a handler opens before its first wait (asyncio.timeout, a TaskGroup) is bound
    to the call's task: its expiry interrupts that call, never the server's serve loop."""
    server, transport, facade, _ = served
    tasks: list[asyncio.Task[Any] | None] = []

    async def timed_check(kernel_id: str, agent_id: str | None = None) -> bool:
        tasks.append(asyncio.current_task())
        try:
            async with asyncio.timeout(0.01):
                await facade.gate.wait()
        except TimeoutError:
            tasks.append(asyncio.current_task())
            return False
        return True
    facade.check_running = timed_check  # type: ignore[method-assign]
    server._registry = HandlerRegistry(facade)
    await asyncio.sleep(0)  # the serve loop is running
    server._on_frames(request("check_running", 1, "k1"))
    [task] = server._inflight.values()
    assert tasks == [task]
    await asyncio.wait_for(task, 5)
    assert tasks == [task, task] and [result(f) for f in transport.sent] == [False]
    assert server._loop_task is not None and not server._loop_task.done()
    transport.inbox.put_nowait(request("ping", 2, "still serving"))
    for _ in range(5):
        await asyncio.sleep(0)
    assert [result(f) for f in transport.sent] == [False, "still serving"]


async def test_the_log_line_and_metrics_follow_the_reply(
        served: tuple[RPCServer, Recorder, Facade, list[str]],
        caplog: pytest.LogCaptureFixture) -> None:
    server, transport, _, _ = served

    class Order(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            transport.order.append(f"{logging.getLevelName(record.levelno)} "
                                   f"{record.getMessage().split()[1]}")
    handler = Order(logging.DEBUG)
    logging.getLogger("berth.rpc.server").addHandler(handler)
    try:
        with caplog.at_level(logging.DEBUG, logger="berth.rpc.server"):
            server._on_frames(request("ping", 1))
            server._on_frames(request("destroy_kernel", 2, "k1"))
    finally:
        logging.getLogger("berth.rpc.server").removeHandler(handler)
    # probes at DEBUG, a state-changing call at INFO; both after their reply
    assert transport.order == ["reply", "DEBUG ping", "metric ping",
                               "reply", "INFO destroy_kernel", "metric destroy_kernel"]


async def test_a_call_that_waits_goes_on_in_a_task_and_can_be_cancelled(
        served: tuple[RPCServer, Recorder, Facade, list[str]]) -> None:
    server, transport, facade, _ = served
    server._on_frames(request("check_running", 1, "k1"))
    assert transport.sent == [] and len(server._inflight) == 1
    facade.gate.set()
    for _ in range(10):
        await asyncio.sleep(0)
    assert [result(f) for f in transport.sent] == [True] and not server._inflight
    facade.gate.clear()
    server._on_frames(request("check_running", 2, "k2"))
    [task] = server._inflight.values()
    header, body = codec.encode_cancel("check_running", 2)
    server._on_frames([b"peer", codec.UPPER, header, body])
    with pytest.raises(asyncio.CancelledError):
        await task
    assert not server._inflight and len(transport.sent) == 1  # nothing sent for it


# ---------------------------------------------------------------------- _resume
async def started(coro: Any) -> tuple[Any, Any]:
    return coro, coro.send(None)


async def test_resume_gives_the_awaited_outcome_to_the_coroutine() -> None:
    loop = asyncio.get_running_loop()
    fut: asyncio.Future[int] = loop.create_future()

    async def body() -> str:
        try:
            await fut
        except KeyError:
            pass
        await asyncio.sleep(0)  # a bare yield
        return f"after {await asyncio.sleep(0.01, 5)}"
    coro, waits_on = await started(body())
    assert waits_on is fut
    loop.call_soon(fut.set_exception, KeyError("seen by the coroutine"))
    assert await _resume(coro, waits_on) == "after 5"


async def test_resume_cancelled_while_waiting_cancels_what_the_coroutine_awaits() -> None:
    loop = asyncio.get_running_loop()
    fut: asyncio.Future[None] = loop.create_future()
    cleaned: list[str] = []

    async def body() -> None:
        try:
            await fut
        finally:
            cleaned.append("finally ran")
    coro, waits_on = await started(body())
    task = asyncio.ensure_future(_resume(coro, waits_on))
    await asyncio.sleep(0)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert fut.cancelled() and cleaned == ["finally ran"]


async def test_resume_throws_a_cancel_that_came_after_the_future_finished() -> None:
    loop = asyncio.get_running_loop()
    fut: asyncio.Future[int] = loop.create_future()

    async def body() -> str:
        try:
            await fut
            await asyncio.sleep(0)
        except asyncio.CancelledError:
            return "handled"
        return "not cancelled"
    coro, waits_on = await started(body())
    task = asyncio.ensure_future(_resume(coro, waits_on))
    await asyncio.sleep(0)
    fut.set_result(1)  # done: the task's wake-up is scheduled ...
    task.cancel()  # ... and the cancel cannot reach the future any more
    assert await task == "handled"


async def test_resume_under_a_timeout_times_out() -> None:
    async def body() -> None:
        await asyncio.sleep(10)
    coro, waits_on = await started(body())
    with pytest.raises(TimeoutError):
        async with asyncio.timeout(0.05):
            await _resume(coro, waits_on)
