"""The container-engine seam: records and the Protocol every backend implements.

Only :mod:`berth.backend.docker` talks to a real engine; :mod:`berth.backend.fake` keeps
containers in memory for unit tests and plugin authors.
"""

from __future__ import annotations

import builtins
from collections.abc import AsyncIterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

__all__ = ["ContainerBackend", "ContainerEvent", "ContainerInfo", "ExecResult", "ImageInfo",
           "NetworkInfo", "RemovedContainer"]


@dataclass(frozen=True)
class ContainerInfo:
    id: str
    name: str
    labels: Mapping[str, str]
    running: bool
    status: str
    exit_code: int | None = None
    oom_killed: bool = False
    pid: int = 0
    image: str = ""
    started_at: str = ""
    finished_at: str = ""
    host_ports: Mapping[int, int] = field(default_factory=dict)


@dataclass(frozen=True)
class ContainerEvent:
    action: str  # "start" | "die" | "oom" | "destroy"
    container_id: str
    labels: Mapping[str, str]
    exit_code: int | None = None


@dataclass(frozen=True)
class ImageInfo:
    id: str
    tags: Sequence[str]
    labels: Mapping[str, str]
    digests: Sequence[str] = ()
    architecture: str = ""
    size: int = 0


@dataclass(frozen=True)
class NetworkInfo:
    id: str
    name: str
    labels: Mapping[str, str]
    driver: str = "bridge"
    containers: Sequence[str] = ()  # ids of the containers attached to it


@dataclass(frozen=True)
class RemovedContainer:
    """What :meth:`ContainerBackend.kill_and_remove` learnt about a container it removed."""

    exit_code: int | None  # None: the engine did not say
    logs: str | None = None  # its last output lines, when asked for


@dataclass(frozen=True)
class ExecResult:
    exit_code: int
    stdout: bytes
    stderr: bytes


class ContainerBackend(Protocol):
    async def close(self) -> None: ...

    async def ping(self) -> bool: ...

    async def root_dir(self) -> str | None:
        """The engine's data root (where its disk I/O lands); None where there is none."""
        ...

    async def create(self, name: str, config: Mapping[str, Any]) -> str: ...

    async def start(self, container_id: str) -> None: ...

    async def stop(self, container_id: str, *, grace: float) -> None: ...

    async def remove(self, container_id: str) -> None: ...

    async def kill_and_remove(self, container_id: str, *, logs_tail: int | None = None
                              ) -> RemovedContainer:
        """``docker rm -f``: SIGKILL if it runs, then removed, in one engine request; returns
        its exit code (137 for the kill) and, with ``logs_tail``, its last output lines, taken
        without another blocking request where the engine allows. ContainerNotFound if gone."""
        ...

    async def inspect(self, container_id: str) -> ContainerInfo: ...

    async def update(self, container_id: str, resources: Mapping[str, Any]) -> None:
        """Change a running container's limits (Docker's update API: CPU, memory, pids)."""
        ...

    async def rename(self, container_id: str, name: str) -> None: ...

    async def list(self, labels: Mapping[str, str]) -> builtins.list[ContainerInfo]: ...

    async def logs(self, container_id: str, *, tail: int | None = None) -> str: ...

    async def exec(self, container_id: str, cmd: Sequence[str], *, user: str | None = None,
                   env: Mapping[str, str] | None = None, timeout: float = 60.0) -> ExecResult: ...

    def events(self, labels: Mapping[str, str]) -> AsyncIterator[ContainerEvent]: ...

    async def image_inspect(self, ref: str) -> ImageInfo | None: ...

    async def image_list(self) -> builtins.list[ImageInfo]: ...

    async def image_remove(self, ref: str, *, force: bool = False, noprune: bool = False) -> None: ...

    def image_pull(self, ref: str, auth: Mapping[str, str] | None = None
                   ) -> AsyncIterator[dict[str, Any]]: ...

    def image_push(self, ref: str, auth: Mapping[str, str] | None = None
                   ) -> AsyncIterator[dict[str, Any]]:
        """Docker's push-stream objects; an error the engine reports raises BackendError."""
        ...

    def image_export(self, ref: str) -> AsyncIterator[bytes]:
        """The image as a ``docker save`` tarball, in chunks."""
        ...

    async def commit(self, container_id: str, *, repository: str | None = None,
                     tag: str | None = None, labels: Mapping[str, str] | None = None,
                     author: str | None = None) -> str:
        """Snapshot a container into an image (tagged ``repository:tag`` when given) whose
        labels are the container's with ``labels`` set over them; returns the image id."""
        ...

    async def network_create(self, name: str, *, labels: Mapping[str, str],
                             driver: str = "bridge") -> NetworkInfo:
        """Create a network; a name already taken raises ContainerConflict."""
        ...

    async def network_inspect(self, name: str) -> NetworkInfo | None: ...

    async def network_list(self, labels: Mapping[str, str]) -> builtins.list[NetworkInfo]: ...

    async def network_remove(self, name: str) -> None:
        """Remove a network; a missing one raises ContainerNotFound."""
        ...
