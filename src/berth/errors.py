"""Berth's one exception tree.

    BerthError
    ├── ConfigError                      bad agent.toml / env value (carries the key path)
    ├── InvalidArgument                  bad RPC argument or kernel spec (carries field)
    │   ├── AgentIdMismatch
    │   ├── InvalidKernelSpec
    │   │   ├── EnvironRefused           a spec environ variable on the deny-list (carries variable)
    │   │   └── IdentityRefused          uid/gid outside the configured policy (field, value)
    │   └── MountRefused                 reserved kernel path or host path outside allowed roots
    ├── KernelError                      (carries kernel_id)
    │   ├── KernelNotFound
    │   ├── KernelAlreadyExists
    │   ├── KernelStateError             operation not allowed in the current state
    │   ├── KernelStartupFailed
    │   └── DeadlineExceeded             a transitional state ran past its deadline
    ├── ResourceError
    │   ├── InsufficientResource         (slot, requested, available)
    │   ├── BelowImageMinimum            spec under the image's ai.backend.resource.min.* label
    │   ├── UnsupportedSlot              slot unknown to this node
    │   ├── NotMultipleOfQuantum
    │   ├── FractionalResourceFragmented
    │   └── PortPoolExhausted
    ├── ImageError
    │   ├── ImageNotAvailable
    │   ├── ImagePullFailed
    │   └── ImagePushFailed
    ├── BackendError                     container engine failure (DockerError mapped once)
    │   ├── ContainerNotFound            404
    │   └── ContainerConflict            409
    ├── StorageError                     scratch / vfolder failure
    │   └── QuotaExceeded
    ├── RunnerError                      in-container runner failure
    │   ├── RunnerUnavailable
    │   └── RuntimeMissing               image has no usable interpreter for query mode
    ├── FileAccessDenied                 path escapes /home/work, or too large
    ├── RPCError                         protocol level (bad frame, too large, auth)
    │   ├── ProtocolError
    │   ├── RequestTooLarge
    │   ├── MethodNotFound
    │   ├── RPCTimeout
    │   ├── AuthenticationFailed
    │   └── AgentUnreachable             client side: connection to the agent lost / not made
    ├── RemoteError                      client side: the agent answered with a FAILURE frame
    ├── EventBusError                    Redis unreachable (RedisError mapped once)
    ├── EtcdError                        etcd unreachable (gateway errors mapped once)
    └── PluginError                      a compute plugin failed
"""

from __future__ import annotations

from decimal import Decimal
from typing import Any


class BerthError(Exception):
    """Root of every error Berth raises on purpose. Subclasses carry data, not only text."""

    def __init__(self, message: str = "", **data: Any) -> None:
        super().__init__(message or self.__class__.__name__)
        self.message = message or self.__class__.__name__
        self.data: dict[str, Any] = data

    def __str__(self) -> str:
        return self.message

    def to_dict(self) -> dict[str, Any]:
        return {"type": self.__class__.__name__, "message": self.message, **{
            k: (str(v) if isinstance(v, Decimal) else v) for k, v in self.data.items()
        }}


class ConfigError(BerthError):
    def __init__(self, message: str, *, key_path: str = "") -> None:
        super().__init__(f"{key_path}: {message}" if key_path else message, key_path=key_path)
        self.key_path = key_path


class InvalidArgument(BerthError):
    def __init__(self, message: str, *, field: str = "", **data: Any) -> None:
        super().__init__(f"{field}: {message}" if field else message, field=field, **data)
        self.field = field


class AgentIdMismatch(InvalidArgument):
    """The Manager addressed an agent id this process does not serve."""


class InvalidKernelSpec(InvalidArgument):
    pass


class EnvironRefused(InvalidKernelSpec):
    """The spec's ``environ`` sets a variable the agent refuses (``container.environ-deny-list``)."""

    def __init__(self, variable: str, *, pattern: str) -> None:
        super().__init__(f"variable {variable} may not be set by a kernel spec "
                         f"(matches container.environ-deny-list entry {pattern!r})",
                         field=f"environ.{variable}", variable=variable, pattern=pattern)
        self.variable = variable
        self.pattern = pattern


class IdentityRefused(InvalidKernelSpec):
    """The spec's uid, main_gid or a supplementary gid is outside the configured policy."""

    def __init__(self, field: str, value: int, *, allowed: str) -> None:
        super().__init__(f"{value} is not allowed on this node (allowed: {allowed})",
                         field=field, value=value, allowed=allowed)
        self.value = value
        self.allowed = allowed


class MountRefused(InvalidArgument):
    pass


class KernelError(BerthError):
    def __init__(self, message: str = "", *, kernel_id: str = "", **data: Any) -> None:
        super().__init__(message or f"{self.__class__.__name__}: {kernel_id}",
                         kernel_id=kernel_id, **data)
        self.kernel_id = kernel_id


class KernelNotFound(KernelError):
    pass


class KernelAlreadyExists(KernelError):
    pass


class KernelStateError(KernelError):
    pass


class KernelStartupFailed(KernelError):
    pass


class DeadlineExceeded(KernelError):
    pass


class ResourceError(BerthError):
    pass


class InsufficientResource(ResourceError):
    def __init__(self, slot: str, requested: Decimal, available: Decimal, message: str = "") -> None:
        super().__init__(
            message or f"insufficient {slot}: requested {requested}, available {available}",
            slot=slot, requested=requested, available=available,
        )
        self.slot = slot
        self.requested = requested
        self.available = available


class BelowImageMinimum(ResourceError):
    """The spec asks less of ``slot`` than the image's ``ai.backend.resource.min.{slot}``."""

    def __init__(self, slot: str, requested: Decimal, minimum: Decimal, image: str = "",
                 message: str = "") -> None:
        super().__init__(
            message or f"image {image} needs at least {minimum} {slot}, the spec asks {requested}",
            slot=slot, requested=requested, minimum=minimum, image=image,
        )
        self.slot = slot
        self.requested = requested
        self.minimum = minimum
        self.image = image


class UnsupportedSlot(ResourceError):
    def __init__(self, slot: str, message: str = "") -> None:
        super().__init__(message or f"slot {slot!r} is not offered by this node", slot=slot)
        self.slot = slot


class NotMultipleOfQuantum(ResourceError):
    pass


class FractionalResourceFragmented(ResourceError):
    pass


class PortPoolExhausted(ResourceError):
    pass


class ImageError(BerthError):
    pass


class ImageNotAvailable(ImageError):
    pass


class ImagePullFailed(ImageError):
    pass


class ImagePushFailed(ImageError):
    pass


class BackendError(BerthError):
    pass


class ContainerNotFound(BackendError):
    pass


class ContainerConflict(BackendError):
    pass


class StorageError(BerthError):
    pass


class QuotaExceeded(StorageError):
    pass


class RunnerError(BerthError):
    pass


class RunnerUnavailable(RunnerError):
    pass


class RuntimeMissing(RunnerError):
    pass


class FileAccessDenied(BerthError):
    pass


class RPCError(BerthError):
    pass


class ProtocolError(RPCError):
    pass


class RequestTooLarge(RPCError):
    pass


class MethodNotFound(RPCError):
    pass


class RPCTimeout(RPCError):
    pass


class AuthenticationFailed(RPCError):
    pass


class AgentUnreachable(RPCError):
    """Client side: the connection to the agent dropped (agent died, restarted, stopped
    answering heartbeats, or refused an oversized frame) or could not be made in time."""


class RemoteError(BerthError):
    """Client side: the agent's handler raised; carries the remote exception name and repr."""

    def __init__(self, name: str, representation: str, traceback: str = "") -> None:
        super().__init__(f"{name}: {representation}", name=name, repr=representation)
        self.name = name
        self.representation = representation
        self.traceback = traceback


class EventBusError(BerthError):
    pass


class EtcdError(BerthError):
    pass


class PluginError(BerthError):
    pass
