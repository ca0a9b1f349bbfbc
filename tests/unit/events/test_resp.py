"""The RESP client: encoding, reply parsing, URL reading, and the connection's life over a
scripted server on loopback (bytes in, canned replies out)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager

import pytest

from berth.events.resp import (
    RedisAddress,
    RedisClient,
    RedisConnectionError,
    RedisProtocolError,
    RedisReplyError,
    encode_command,
    read_reply,
)


async def parse(data: bytes) -> object:
    reader = asyncio.StreamReader()
    reader.feed_data(data)
    reader.feed_eof()
    return await read_reply(reader)


def test_commands_are_arrays_of_bulk_strings() -> None:
    assert encode_command(["SET", b"k\r\n", 5, 0.5, "é"]) == (
        b"*5\r\n$3\r\nSET\r\n$3\r\nk\r\n\r\n$1\r\n5\r\n$3\r\n0.5\r\n$2\r\n\xc3\xa9\r\n")
    with pytest.raises(TypeError):
        encode_command(["SET", True])
    with pytest.raises(TypeError):
        encode_command(["SET", None])  # type: ignore[list-item]


@pytest.mark.parametrize(("raw", "value"), [
    (b"+OK\r\n", "OK"),
    (b":-12\r\n", -12),
    (b"$5\r\nab\r\nc\r\n", b"ab\r\nc"),
    (b"$0\r\n\r\n", b""),
    (b"$-1\r\n", None),
    (b"*-1\r\n", None),
    (b"*0\r\n", []),
    (b"*3\r\n:1\r\n*1\r\n$1\r\nx\r\n$-1\r\n", [1, [b"x"], None]),
])
async def test_replies_are_read_as_python_values(raw: bytes, value: object) -> None:
    assert await parse(raw) == value


async def test_an_error_reply_is_returned_as_an_exception_value() -> None:
    got = await parse(b"-WRONGTYPE Operation against a key\r\n")
    assert isinstance(got, RedisReplyError)
    assert "WRONGTYPE" in str(got)


@pytest.mark.parametrize("raw", [
    b"?1\r\n", b":x\r\n", b"$-2\r\n", b"$3\r\nabcd\r\n", b"*-5\r\n", b"$99999999999\r\n",
])
async def test_malformed_replies_are_protocol_errors(raw: bytes) -> None:
    with pytest.raises(RedisProtocolError):
        await parse(raw)


async def test_a_reply_nested_without_end_is_a_protocol_error_not_a_recursion_error() -> None:
    with pytest.raises(RedisProtocolError, match="nested"):
        await parse(b"*1\r\n" * 10_000 + b":1\r\n")
    assert await parse(b"*1\r\n" * 16 + b":1\r\n") is not None


async def test_a_truncated_reply_is_an_incomplete_read() -> None:
    with pytest.raises(asyncio.IncompleteReadError):
        await parse(b"$10\r\nabc")


@pytest.mark.parametrize(("url", "address"), [
    ("redis://h:7000/3", RedisAddress("h", 7000, 3)),
    ("redis://h", RedisAddress("h", 6379, 0)),
    ("redis://:p%40ss%2Fw@h/0", RedisAddress("h", 6379, 0, None, "p@ss/w")),
    ("redis://u:pw@[::1]:1/2", RedisAddress("::1", 1, 2, "u", "pw")),
    ("rediss://h:1", RedisAddress("h", 1, 0, tls=True)),
])
def test_urls(url: str, address: RedisAddress) -> None:
    assert RedisAddress.from_url(url) == address


@pytest.mark.parametrize("url", ["http://h", "redis://h:99999", "redis://h/x", "h:6379"])
def test_bad_urls_are_refused(url: str) -> None:
    with pytest.raises(ValueError):
        RedisAddress.from_url(url)


CLOSE = b"<close>"  # a reply starting with this is sent, then the connection is closed
Script = Callable[[bytes], bytes | None]


class ScriptedServer:
    """Answers each command (its encoded bytes) with ``script(command)``; ``None``: no answer."""

    def __init__(self, script: Script) -> None:
        self.script = script
        self.received: list[bytes] = []
        self.connections = 0

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        try:
            while True:
                header = await reader.readuntil(b"\r\n")
                parts = [header]
                for _ in range(int(header[1:-2])):
                    size = await reader.readuntil(b"\r\n")
                    parts += [size, await reader.readexactly(int(size[1:-2]) + 2)]
                command = b"".join(parts)
                self.received.append(command)
                reply = self.script(command)
                if reply is not None:
                    writer.write(reply.removeprefix(CLOSE))
                    await writer.drain()
                    if reply.startswith(CLOSE):
                        return
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()


@asynccontextmanager
async def serving(script: Script) -> AsyncIterator[tuple[ScriptedServer, str]]:
    server = ScriptedServer(script)
    listener = await asyncio.start_server(server.handle, "127.0.0.1", 0)
    port = listener.sockets[0].getsockname()[1]
    try:
        yield server, f"redis://:s3cret@127.0.0.1:{port}/4"
    finally:
        listener.close()
        await listener.wait_closed()


def ok(_: bytes) -> bytes:
    return b"+OK\r\n"


def error_on(marker: bytes, error: bytes, otherwise: bytes) -> Callable[[bytes], bytes]:
    """A script: ``error`` to a command that holds ``marker``, ``otherwise`` to the rest."""
    return lambda command: error if marker in command else otherwise


async def test_the_first_request_authenticates_and_selects_the_db() -> None:
    async with serving(ok) as (server, url):
        client = RedisClient(url, timeout=2)
        assert await client.execute("SET", "k", "v") == "OK"
        assert await client.execute("GET", "k") == "OK"
        await client.aclose()
    assert server.received == [encode_command(c) for c in (
        ["AUTH", "s3cret"], ["SELECT", 4], ["SET", "k", "v"], ["GET", "k"])]
    assert server.connections == 1


async def test_a_refused_password_is_a_reply_error_and_nothing_is_sent() -> None:
    script = error_on(b"AUTH", b"-WRONGPASS invalid password\r\n", b"+OK\r\n")
    async with serving(script) as (server, url):
        client = RedisClient(url, timeout=2)
        with pytest.raises(RedisReplyError, match="WRONGPASS"):
            await client.execute("SET", "k", "v")
        await client.aclose()
    assert all(b"SET" not in c for c in server.received)


async def test_a_pipeline_reads_every_reply_before_raising_the_first_error() -> None:
    async with serving(error_on(b"BAD", b"-ERR bad\r\n", b":1\r\n")) as (server, url):
        client = RedisClient(url, timeout=2)
        with pytest.raises(RedisReplyError, match="bad"):
            await client.pipeline([("INCR", "a"), ("BAD",), ("INCR", "b")])
        # the connection is still in step: the next reply is this request's
        assert await client.execute("INCR", "c") == 1
        await client.aclose()
    assert server.connections == 1


async def test_a_transaction_returns_exec_replies_and_reports_a_discarded_one() -> None:
    def script(command: bytes) -> bytes:
        if b"MULTI" in command:
            return b"+OK\r\n"
        if b"EXEC" in command:
            return b"*2\r\n:2\r\n:1\r\n"
        return b"+QUEUED\r\n"
    async with serving(script) as (_, url):
        client = RedisClient(url, timeout=2)
        assert await client.pipeline([("HSET", "h", "f", "v"), ("EXPIRE", "h", 5)],
                                     transaction=True) == [2, 1]
        await client.aclose()

    def aborting(command: bytes) -> bytes:
        if b"EXEC" in command:
            return b"-EXECABORT Transaction discarded\r\n"
        return b"-ERR unknown command\r\n" if b"NOPE" in command else b"+OK\r\n"
    async with serving(aborting) as (_, url):
        client = RedisClient(url, timeout=2)
        with pytest.raises(RedisReplyError, match="unknown command"):
            await client.pipeline([("NOPE",)], transaction=True)
        await client.aclose()


async def test_a_silent_server_times_out_and_the_next_request_reconnects() -> None:
    answer = False

    def script(command: bytes) -> bytes | None:
        return b"+OK\r\n" if answer or b"AUTH" in command or b"SELECT" in command else None
    async with serving(script) as (server, url):
        client = RedisClient(url, timeout=0.2)
        with pytest.raises(RedisConnectionError, match="TimeoutError"):
            await client.execute("SET", "k", "v")
        answer = True
        assert await client.execute("SET", "k", "v") == "OK"
        await client.aclose()
    assert server.connections == 2


async def test_a_cancelled_request_does_not_leave_its_reply_to_the_next_one() -> None:
    gate = asyncio.Event()
    replies = iter([b":1\r\n", b":2\r\n"])

    def script(command: bytes) -> bytes | None:
        if b"AUTH" in command or b"SELECT" in command:
            return b"+OK\r\n"
        return next(replies) if gate.is_set() else None
    async with serving(script) as (server, url):
        client = RedisClient(url, timeout=2)
        task = asyncio.create_task(client.execute("INCR", "x"))
        await asyncio.sleep(0.1)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        gate.set()
        assert await client.execute("INCR", "x") == 1  # a fresh connection, a fresh reply
        await client.aclose()
    assert server.connections == 2


async def test_a_connection_closed_mid_reply_is_a_connection_error() -> None:
    def script(command: bytes) -> bytes:
        return b"+OK\r\n" if b"AUTH" in command or b"SELECT" in command else CLOSE + b"$10\r\nab"
    async with serving(script) as (server, url):
        client = RedisClient(url, timeout=2)
        with pytest.raises(RedisConnectionError, match="closed"):
            await client.execute("GET", "k")
        with pytest.raises(RedisConnectionError, match="closed"):
            await client.execute("GET", "k")  # a new connection, closed again
        await client.aclose()
    assert server.connections == 2


async def test_nothing_listening_is_a_connection_error() -> None:
    client = RedisClient("redis://127.0.0.1:1/0", timeout=1)
    with pytest.raises(RedisConnectionError):
        await client.execute("PING")
    await client.aclose()
