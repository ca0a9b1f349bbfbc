"""In-memory stand-ins shared by tests: a fake agent facade and a socket-free loopback.

``FakeAgent`` implements the RPC facade over dicts (no Docker); ``Loopback`` connects an
:class:`~berth.rpc.RPCServer` and :class:`~berth.client.AgentClient` through asyncio queues,
so the whole protocol path runs without sockets.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import Any

from berth.errors import AgentUnreachable, InvalidArgument, KernelAlreadyExists, KernelNotFound
from berth.rpc import codec


class FakeAgent:
    """Answers the agent RPCs from memory; records every call in ``calls``."""

    def __init__(self) -> None:
        self.kernels: dict[str, dict[str, Any]] = {}
        self.calls: list[tuple[str, dict[str, Any]]] = []
        self._next_port = 30000

    def _record(self, method: str, **args: Any) -> None:
        self.calls.append((method, args))

    async def ping(self, msg: str, agent_id: str | None = None) -> str:
        self._record("ping", msg=msg, agent_id=agent_id)
        return msg

    async def health(self, agent_id: str | None = None) -> dict[str, Any]:
        return {"status": "ok", "version": "fake", "component": "agent"}

    async def gather_hwinfo(self, agent_id: str | None = None) -> dict[str, Any]:
        return {"cpu": {"status": "healthy", "status_info": None, "metadata": {"cores": "2"}}}

    async def get_status(self, agent_id: str | None = None) -> dict[str, Any]:
        now = time.monotonic()
        return {"agent": {"id": "fake-agent", "kernels": len(self.kernels)},
                "kernels": [{**{k: v for k, v in kern.items() if k != "created"},
                             "age": round(now - kern["created"], 3)}
                            for kern in self.kernels.values()]}

    async def create_kernels(self, raw_session_id: str, raw_kernel_ids: list[str],
                             raw_configs: list[dict[str, Any]], raw_cluster_info: dict[str, Any],
                             kernel_image_refs: dict[Any, Any],
                             agent_id: str | None = None) -> list[dict[str, Any]]:
        self._record("create_kernels", session_id=raw_session_id, kernel_ids=raw_kernel_ids,
                     configs=raw_configs, cluster_info=raw_cluster_info,
                     image_refs=kernel_image_refs)
        if len(raw_kernel_ids) != len(raw_configs):
            raise InvalidArgument("kernel ids and configs differ in length", field="raw_configs")
        return [self._create(raw_session_id, kid, cfg)
                for kid, cfg in zip(raw_kernel_ids, raw_configs, strict=True)]

    def _create(self, session_id: str, kernel_id: str, config: dict[str, Any]) -> dict[str, Any]:
        if kernel_id in self.kernels:
            raise KernelAlreadyExists(kernel_id=kernel_id)
        image = config.get("image", {})
        self.kernels[kernel_id] = {
            "id": kernel_id, "session_id": session_id, "state": "RUNNING",
            "image": image.get("canonical") if isinstance(image, dict) else image,
            "slots": config.get("resource_slots", {}), "ports": config.get("preopen_ports", []),
            "container_id": f"{abs(hash(kernel_id)):016x}", "created": time.monotonic(),
            "restarts": 0,
        }
        return {"id": kernel_id, "container_id": self.kernels[kernel_id]["container_id"],
                "service_ports": [], "kernel_host": "127.0.0.1"}

    async def create_kernel(self, session_id: str, kernel_id: str, config: dict[str, Any],
                            cluster_info: dict[str, Any] | None = None,
                            agent_id: str | None = None) -> dict[str, Any]:
        return self._create(session_id, kernel_id, config)

    def _get(self, kernel_id: str) -> dict[str, Any]:
        try:
            return self.kernels[kernel_id]
        except KeyError:
            raise KernelNotFound(kernel_id=kernel_id) from None

    async def destroy_kernel(self, kernel_id: str, session_id: str, reason: str | None = None,
                             suppress_events: bool = False, agent_id: str | None = None) -> None:
        self._record("destroy_kernel", kernel_id=kernel_id, reason=reason)
        self._get(kernel_id)
        del self.kernels[kernel_id]

    async def restart_kernel(self, session_id: str, kernel_id: str, kernel_image: Any,
                             updated_config: dict[str, Any],
                             agent_id: str | None = None) -> dict[str, Any]:
        kern = self._get(kernel_id)
        kern["restarts"] += 1
        return {"container_id": kern["container_id"], "service_ports": []}

    async def check_running(self, kernel_id: str, agent_id: str | None = None) -> bool:
        return self.kernels.get(kernel_id, {}).get("state") == "RUNNING"

    async def check_creating(self, kernel_id: str, agent_id: str | None = None) -> bool:
        return kernel_id in self.kernels

    async def check_pulling(self, image_name: str, agent_id: str | None = None) -> bool:
        return False

    async def get_logs(self, kernel_id: str, agent_id: str | None = None) -> dict[str, Any]:
        self._get(kernel_id)
        return {"logs": f"logs of {kernel_id}\n"}

    async def sync_kernel_registry(self, raw_kernel_session_ids: list[tuple[str, str]],
                                   agent_id: str | None = None) -> None:
        self._record("sync_kernel_registry", pairs=raw_kernel_session_ids)

    async def assign_port(self, agent_id: str | None = None) -> int:
        self._next_port += 1
        return self._next_port

    async def release_port(self, port_no: int, agent_id: str | None = None) -> None:
        self._record("release_port", port_no=port_no)

    async def reset_agent(self, agent_id: str | None = None) -> None:
        self.kernels.clear()

    async def shutdown_agent(self, terminate_kernels: bool, agent_id: str | None = None) -> None:
        self._record("shutdown_agent", terminate_kernels=terminate_kernels)

    async def get_local_config(self, agent_id: str | None = None) -> dict[str, Any]:
        return {"agent": {"abuse-report-path": ""}, "watcher": {}}

    async def scan_gpu_alloc_map(self, agent_id: str | None = None) -> dict[str, str]:
        return {}

    async def execute_code(self, kernel_id: str, code: str, opts: dict[str, Any] | None = None,
                           agent_id: str | None = None) -> dict[str, Any]:
        self._get(kernel_id)
        if code.startswith("sleep "):
            await asyncio.sleep(float(code.split()[1]))
        return {"status": "finished", "console": [["stdout", code]]}


class _LoopbackServer:
    def __init__(self, hub: Loopback) -> None:
        self._hub = hub
        self.bound_endpoint = "loopback://"

    async def bind(self) -> None:
        return None

    async def serve(self, on_frames: Callable[[list[bytes]], None]) -> None:
        while True:
            on_frames(await self._hub.to_server.get())

    def send(self, frames: list[bytes]) -> None:
        queue = self._hub.to_clients.get(frames[0])
        if queue is not None:
            queue.put_nowait(frames[1:])

    async def close(self) -> None:
        return None


class _Inbox:
    """A client's mailbox: each message goes to the client's callback one loop turn later,
    in order, as a socket's read callback would hand it over."""

    def __init__(self) -> None:
        self.deliver: Callable[[list[bytes]], None] | None = None

    def put_nowait(self, frames: list[bytes]) -> None:
        if self.deliver is not None:
            asyncio.get_running_loop().call_soon(self.deliver, frames)


class _LoopbackClient:
    def __init__(self, hub: Loopback, peer: bytes, refuse: bool) -> None:
        self._hub, self._peer, self._refuse = hub, peer, refuse
        self._inbox = _Inbox()
        self._on_message: Callable[[list[bytes]], None] | None = None
        self._pong: asyncio.Future[None] | None = None

    def open(self, on_message: Callable[[list[bytes]], None],
             on_lost: Callable[[AgentUnreachable], None]) -> None:
        self._on_message = on_message
        self._inbox.deliver = self._deliver
        if not self._refuse:  # a refused Curve handshake: nothing ever reaches the server
            self._hub.to_clients[self._peer] = self._inbox

    def _deliver(self, frames: list[bytes]) -> None:
        if frames and frames[0] == codec.PONG:
            if self._pong is not None and not self._pong.done():
                self._pong.set_result(None)
        elif self._on_message is not None:
            self._on_message(frames)

    async def ping(self, timeout: float) -> bool:
        if self._refuse:
            await asyncio.sleep(timeout)
            return False
        self._pong = asyncio.get_running_loop().create_future()
        await self.send([codec.PING, b"", b""])
        try:
            async with asyncio.timeout(timeout):
                await self._pong
        except TimeoutError:
            return False
        finally:
            self._pong = None
        return True

    async def send(self, frames: list[bytes]) -> None:
        if not self._refuse:
            self._hub.to_server.put_nowait([self._peer, *frames])

    def close(self) -> None:
        self._hub.to_clients.pop(self._peer, None)
        self._inbox.deliver = self._on_message = None


class Loopback:
    """Pairs one in-memory server transport with any number of client transports."""

    def __init__(self) -> None:
        self.to_server: asyncio.Queue[list[bytes]] = asyncio.Queue()
        self.to_clients: dict[bytes, _Inbox] = {}
        self._count = 0

    def server_transport(self) -> _LoopbackServer:
        return _LoopbackServer(self)

    def client_transport(self, *, refuse: bool = False) -> _LoopbackClient:
        self._count += 1
        return _LoopbackClient(self, b"peer-%d" % self._count, refuse)
