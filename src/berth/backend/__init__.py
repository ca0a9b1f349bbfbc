"""The container-engine seam: the Protocol, its records, the Docker backend and the in-memory one."""

from berth.backend.base import (
    ContainerBackend,
    ContainerEvent,
    ContainerInfo,
    ExecResult,
    ImageInfo,
    NetworkInfo,
)
from berth.backend.docker import DockerBackend
from berth.backend.fake import FakeBackend, FakeContainer, RemoteImage

__all__ = [
    "ContainerBackend",
    "ContainerEvent",
    "ContainerInfo",
    "DockerBackend",
    "ExecResult",
    "FakeBackend",
    "FakeContainer",
    "ImageInfo",
    "NetworkInfo",
    "RemoteImage",
]
