"""Async client for the agent's RPC: what a Manager (or an operator) uses.

Speaks callosum 1.0.3's wire protocol, so it talks to Berth and to any callosum peer.
FAILURE replies become the matching :mod:`berth.errors` class when the remote name is one
of Berth's errors, else :class:`~berth.errors.RemoteError`; ERROR replies become
:class:`~berth.errors.ProtocolError` (or the named RPC error). A dropped connection (agent
killed, restarted or silent past the heartbeat timeout) fails every call in flight with
:class:`~berth.errors.AgentUnreachable` within seconds, whatever their timeouts; the next call
uses the re-established connection.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any, Protocol, Self

from berth.client.transport import CurveClientSecurity, DealerTransport
from berth.errors import (
    AgentUnreachable,
    AuthenticationFailed,
    ConfigError,
    ProtocolError,
    RPCTimeout,
)
from berth.rpc import KeyPair, MsgType, codec, failure, load_keypair, load_public_keys

log = logging.getLogger(__name__)

DEFAULT_ADDR = "tcp://127.0.0.1:6011"
_ReqKey = tuple[str, str, int]


class ClientTransport(Protocol):
    """The socket edge (DealerTransport; fake.Loopback in tests).

    ``open`` connects and hands every message received to ``on_message`` and every dropped
    connection to ``on_lost``, from event-loop callbacks; ``send`` raises
    :class:`AgentUnreachable` when there is no connection."""

    def open(self, on_message: Callable[[list[bytes]], None],
             on_lost: Callable[[AgentUnreachable], None]) -> None: ...
    async def ping(self, timeout: float) -> bool: ...
    async def send(self, frames: list[bytes]) -> None: ...
    def close(self) -> None: ...


class RPCClient:
    """Generic callosum client: ``await client.call(method, *args, **kwargs)``."""

    def __init__(self, addr: str = DEFAULT_ADDR, server_public_key: bytes | None = None,
                 client_keypair: KeyPair | None = None, *, timeout: float = 30.0,
                 handshake_timeout: float = 5.0, heartbeat: float = 1.0,
                 transport: ClientTransport | None = None) -> None:
        self.addr = addr
        self.timeout = timeout
        self._handshake_timeout = handshake_timeout
        self._transport = transport or DealerTransport(
            addr, _security(server_public_key, client_keypair), heartbeat=heartbeat,
            connect_timeout=handshake_timeout)
        self._seq = itertools.count()
        self._pending: dict[_ReqKey, asyncio.Future[codec.Reply]] = {}

    async def __aenter__(self) -> Self:
        self._transport.open(self._on_message, self._fail_all)
        try:
            if not await self._transport.ping(self._handshake_timeout):
                raise AuthenticationFailed(
                    f"no PONG from {self.addr} within {self._handshake_timeout}s "
                    "(agent down, wrong address or key refused)", addr=self.addr)
        except BaseException:
            self._transport.close()
            raise
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        for fut in self._pending.values():
            fut.cancel()
        self._transport.close()

    async def call(self, method: str, *args: Any, timeout: float | None = None,
                   **kwargs: Any) -> Any:
        """Invoke ``method``; return its result or raise the typed remote error.

        The reply resolves the call's future in the transport's read callback; the timeout is
        one timer on the loop, not a task or a timeout scope."""
        seq = next(self._seq)
        key: _ReqKey = (method, "", seq)
        loop = asyncio.get_running_loop()
        fut: asyncio.Future[codec.Reply] = loop.create_future()
        self._pending[key] = fut
        limit = self.timeout if timeout is None else timeout
        timer: asyncio.TimerHandle | None = None
        try:
            await self._transport.send([codec.UPPER, *codec.encode_request(
                method, seq, list(args), kwargs)])
            timer = loop.call_later(limit, _expire, fut)
            reply = await fut
        except _Expired:
            await self._send_cancel(method, seq)
            raise RPCTimeout(f"{method} got no reply within {limit}s", method=method) from None
        finally:
            if timer is not None:
                timer.cancel()
            self._pending.pop(key, None)
            if fut.done() and not fut.cancelled():
                fut.exception()  # failed by a drop while the send failed: retrieved here
        return _unwrap(reply)

    async def _send_cancel(self, method: str, seq: int) -> None:
        with contextlib.suppress(Exception):  # best effort: the call already timed out
            await self._transport.send([codec.UPPER, *codec.encode_cancel(method, seq)])

    def _on_message(self, frames: list[bytes]) -> None:
        """A reply: resolve its caller's future here, in the transport's read callback."""
        if len(frames) != 3 or frames[0] != codec.UPPER:
            log.debug("RPC client: ignored a message of %d frames", len(frames))
            return
        try:
            reply = codec.decode_reply(frames[1], frames[2])
        except ProtocolError as exc:
            self._fail_from_header(frames[1], exc)
            return
        header = reply.header
        okey = header.okey.decode() if isinstance(header.okey, bytes) else header.okey
        fut = self._pending.get((header.meth, okey, header.seq))
        if fut is not None and not fut.done():
            fut.set_result(reply)

    def _fail_all(self, exc: AgentUnreachable) -> None:
        if self._pending:
            log.warning("RPC client: %s; failing %d call(s) in flight", exc, len(self._pending))
        for (method, _okey, _seq), fut in self._pending.items():
            if not fut.done():
                fut.set_exception(AgentUnreachable(f"{exc} while {method} was in flight",
                                                   method=method, **exc.data))

    def _fail_from_header(self, raw_header: bytes, exc: ProtocolError) -> None:
        header = codec.header_or_none(raw_header)
        if header is None:
            log.warning("RPC client: undecodable reply dropped: %s", exc)
            return
        fut = self._pending.get((header.meth, str(header.okey), header.seq))
        if fut is not None and not fut.done():
            fut.set_exception(exc)


class _Expired(Exception):
    """A call's timer fired before its reply came."""


def _expire(fut: asyncio.Future[codec.Reply]) -> None:
    if not fut.done():
        fut.set_exception(_Expired())


def _unwrap(reply: codec.Reply) -> Any:
    if reply.error is None:
        return reply.value
    name, representation, tb = reply.error
    if reply.header.type is MsgType.ERROR:
        raise failure.rebuild(name, representation, tb, default=ProtocolError)
    if reply.header.type is MsgType.CANCELLED:
        raise RPCTimeout("the agent cancelled the request", method=reply.header.meth)
    raise failure.rebuild(name, representation, tb)


def _security(server_public_key: bytes | None,
              client_keypair: KeyPair | None) -> CurveClientSecurity | None:
    if server_public_key is None and client_keypair is None:
        return None
    if server_public_key is None or client_keypair is None:
        raise ConfigError("CurveZMQ needs both the agent's public key and a client key pair",
                          key_path="server_public_key")
    return CurveClientSecurity(server_public_key, client_keypair.public_key,
                               client_keypair.secret_key)


def load_client_keys(server_key_file: Path | None, client_keypair_file: Path | None
                     ) -> tuple[bytes | None, KeyPair | None]:
    """Read the key files the CLI and config name; (None, None) means plain mode."""
    server_key = next(iter(load_public_keys([server_key_file]))) if server_key_file else None
    pair = load_keypair(client_keypair_file) if client_keypair_file else None
    return server_key, pair


class AgentClient(RPCClient):
    """One typed method per agent RPC (Backend.AI names and argument shapes).

    ``agent_id`` (given at construction) is sent with every call, as the Manager does.
    """

    def __init__(self, addr: str = DEFAULT_ADDR, server_public_key: bytes | None = None,
                 client_keypair: KeyPair | None = None, *, timeout: float = 30.0,
                 agent_id: str | None = None, handshake_timeout: float = 5.0,
                 heartbeat: float = 1.0, transport: ClientTransport | None = None) -> None:
        super().__init__(addr, server_public_key, client_keypair, timeout=timeout,
                         handshake_timeout=handshake_timeout, heartbeat=heartbeat,
                         transport=transport)
        self.agent_id = agent_id

    async def _rpc(self, method: str, *args: Any, **kwargs: Any) -> Any:
        return await self.call(method, *args, agent_id=self.agent_id, **kwargs)

    # -- node
    async def ping(self, msg: str = "ping") -> str:
        return str(await self._rpc("ping", msg))

    async def health(self) -> dict[str, Any]:
        return dict(await self._rpc("health"))

    async def health_v2(self) -> dict[str, Any]:
        return dict(await self._rpc("health_v2", req={}))

    async def gather_hwinfo(self) -> dict[str, Any]:
        return dict(await self._rpc("gather_hwinfo"))

    async def gather_hwinfo_v2(self) -> dict[str, Any]:
        return dict(await self._rpc("gather_hwinfo_v2", req={}))

    async def get_status(self) -> dict[str, Any]:
        return dict(await self._rpc("get_status"))

    async def get_local_config(self) -> dict[str, Any]:
        return dict(await self._rpc("get_local_config"))

    async def scan_gpu_alloc_map(self) -> dict[str, Any]:
        return dict(await self._rpc("scan_gpu_alloc_map"))

    async def reset_agent(self) -> Any:
        return await self._rpc("reset_agent")

    async def shutdown_agent(self, terminate_kernels: bool) -> Any:
        return await self._rpc("shutdown_agent", terminate_kernels)

    async def assign_port(self) -> int:
        return int(await self._rpc("assign_port"))

    async def release_port(self, port_no: int) -> None:
        await self._rpc("release_port", port_no)

    # -- kernels
    async def create_kernels(self, session_id: str, kernel_ids: Sequence[str],
                             configs: Sequence[Mapping[str, Any]],
                             cluster_info: Mapping[str, Any],
                             kernel_image_refs: Mapping[Any, Any] | None = None
                             ) -> list[dict[str, Any]]:
        return list(await self._rpc("create_kernels", str(session_id),
                                    [str(k) for k in kernel_ids], list(configs),
                                    dict(cluster_info), dict(kernel_image_refs or {})))

    async def create_kernel(self, session_id: str, kernel_id: str, config: Mapping[str, Any],
                            cluster_info: Mapping[str, Any] | None = None) -> dict[str, Any]:
        return dict(await self._rpc("create_kernel", str(session_id), str(kernel_id),
                                    dict(config), dict(cluster_info or {})))

    async def destroy_kernel(self, kernel_id: str, session_id: str, reason: str | None = None,
                             suppress_events: bool = False) -> Any:
        return await self._rpc("destroy_kernel", str(kernel_id), str(session_id), reason,
                               suppress_events=suppress_events)

    async def restart_kernel(self, session_id: str, kernel_id: str, kernel_image: Any,
                             updated_config: Mapping[str, Any]) -> dict[str, Any]:
        return dict(await self._rpc("restart_kernel", str(session_id), str(kernel_id),
                                    kernel_image, dict(updated_config)))

    async def check_running(self, kernel_id: str) -> bool:
        return bool(await self._rpc("check_running", str(kernel_id)))

    async def check_creating(self, kernel_id: str) -> bool:
        return bool(await self._rpc("check_creating", str(kernel_id)))

    async def check_pulling(self, image_name: str) -> bool:
        return bool(await self._rpc("check_pulling", image_name))

    async def ping_kernel(self, kernel_id: str) -> Any:
        return await self._rpc("ping_kernel", str(kernel_id))

    async def get_logs(self, kernel_id: str) -> dict[str, Any]:
        return dict(await self._rpc("get_logs", str(kernel_id)))

    async def sync_kernel_registry(self, kernel_session_ids: Sequence[tuple[str, str]]) -> Any:
        return await self._rpc("sync_kernel_registry",
                               [[str(k), str(s)] for k, s in kernel_session_ids])

    # -- images
    async def check_and_pull(self, image_configs: Mapping[str, Any]) -> dict[str, Any]:
        return dict(await self._rpc("check_and_pull", dict(image_configs)))

    async def purge_images(self, image_canonicals: Sequence[str], force: bool = False,
                           noprune: bool = False) -> dict[str, Any]:
        return dict(await self._rpc("purge_images", list(image_canonicals), force, noprune))

    # -- execution and services
    async def execute(self, session_id: str, kernel_id: str, api_version: int, run_id: str,
                      mode: str, code: str, opts: Mapping[str, Any],
                      flush_timeout: float | None = None) -> dict[str, Any]:
        return dict(await self._rpc("execute", str(session_id), str(kernel_id), api_version,
                                    run_id, mode, code, dict(opts), flush_timeout))

    async def execute_code(self, kernel_id: str, code: str,
                           opts: Mapping[str, Any] | None = None) -> dict[str, Any]:
        return dict(await self._rpc("execute_code", str(kernel_id), code, dict(opts or {})))

    async def trigger_batch_execution(self, session_id: str, kernel_id: str, code: str,
                                      timeout_seconds: float | None = None) -> Any:
        return await self._rpc("trigger_batch_execution", str(session_id), str(kernel_id),
                               code, timeout_seconds)

    async def get_completions(self, kernel_id: str, text: str,
                              opts: Mapping[str, Any] | None = None) -> dict[str, Any]:
        return dict(await self._rpc("get_completions", str(kernel_id), text, dict(opts or {})))

    async def interrupt_kernel(self, kernel_id: str) -> dict[str, Any]:
        return dict(await self._rpc("interrupt_kernel", str(kernel_id)))

    async def start_service(self, kernel_id: str, service: str,
                            opts: Mapping[str, Any] | None = None) -> dict[str, Any]:
        return dict(await self._rpc("start_service", str(kernel_id), service, dict(opts or {})))

    async def shutdown_service(self, kernel_id: str, service: str) -> Any:
        return await self._rpc("shutdown_service", str(kernel_id), service)

    # -- files
    async def upload_file(self, kernel_id: str, filename: str, filedata: bytes) -> Any:
        return await self._rpc("upload_file", str(kernel_id), filename, filedata)

    async def download_file(self, kernel_id: str, filepath: str) -> bytes:
        return bytes(await self._rpc("download_file", str(kernel_id), filepath))

    async def download_single(self, kernel_id: str, filepath: str) -> bytes:
        return bytes(await self._rpc("download_single", str(kernel_id), filepath))

    async def list_files(self, kernel_id: str, path: str) -> dict[str, Any]:
        return dict(await self._rpc("list_files", str(kernel_id), path))

    # -- networks
    async def create_local_network(self, network_name: str) -> Any:
        return await self._rpc("create_local_network", network_name)

    async def destroy_local_network(self, network_name: str) -> Any:
        return await self._rpc("destroy_local_network", network_name)
