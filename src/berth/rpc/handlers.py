"""The method table: Backend.AI RPC names → async methods of a facade object.

Handlers stay thin: they bind the wire arguments to the facade method's signature,
validate/coerce each one against its annotation (pydantic), and call it. The facade (the
lead's Agent) implements async methods named exactly as in :data:`METHOD_NAMES`, each
accepting the ``agent_id`` keyword the Manager sends.
"""

from __future__ import annotations

import inspect
import json
import types
import typing
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import pydantic

from berth.errors import InvalidArgument, MethodNotFound

# Backend.AI's agent RPC names (reference §1.2) followed by the seed's own names.
BACKENDAI_METHODS: tuple[str, ...] = (
    "ping", "health", "health_v2", "gather_hwinfo", "gather_hwinfo_v2", "ping_kernel",
    "check_pulling", "check_creating", "check_running", "sync_kernel_registry",
    "check_and_pull", "create_kernels", "destroy_kernel", "interrupt_kernel",
    "get_completions", "get_logs", "restart_kernel", "execute", "trigger_batch_execution",
    "start_service", "shutdown_service", "get_commit_status", "commit", "push_image",
    "purge_images", "get_local_config", "upload_file", "download_file", "download_single",
    "list_files", "shutdown_agent", "create_local_network", "destroy_local_network",
    "reset_agent", "assign_port", "release_port", "scan_gpu_alloc_map",
)
SEED_METHODS: tuple[str, ...] = ("create_kernel", "execute_code", "get_status")
METHOD_NAMES: tuple[str, ...] = BACKENDAI_METHODS + SEED_METHODS

# v3 methods take {"req": {...}, "agent_id": ...}; served by the v1 method when the facade
# has no dedicated one.
V3_FALLBACKS: dict[str, str] = {"health_v2": "health", "gather_hwinfo_v2": "gather_hwinfo"}

_KERNEL_ARG_NAMES = ("kernel_id", "raw_kernel_ids")
_SESSION_ARG_NAMES = ("session_id", "raw_session_id")
_PASS = frozenset({object})  # Any: every value passes unchanged
_PLAIN = (str, int, float, bool, bytes, type(None))


def _unchanged_types(annotation: Any) -> frozenset[type] | None:
    """The types whose values the annotation's pydantic validation (lax mode) returns as they
    are, so a value of exactly such a type needs no validation; None: always validate."""
    if annotation is Any:
        return _PASS
    if annotation in _PLAIN:
        return frozenset({annotation})
    if typing.get_origin(annotation) in (typing.Union, types.UnionType):
        members = [_unchanged_types(a) for a in typing.get_args(annotation)]
        if all(m is not None and m is not _PASS for m in members):
            return frozenset(t for m in members if m for t in m)
    return None

AsyncMethod = Callable[..., Awaitable[Any]]


@dataclass(frozen=True, slots=True)
class PreparedCall:
    """A validated call, ready to run."""

    method: str
    kernel_id: str | None
    func: AsyncMethod
    args: tuple[Any, ...]
    kwargs: dict[str, Any]
    convert: Callable[[Any], Any] | None = None
    session_id: str | None = None

    async def run(self) -> Any:
        result = await self.func(*self.args, **self.kwargs)
        return self.convert(result) if self.convert is not None else result


class _Handler:
    """One facade method with its signature and per-parameter validators."""

    def __init__(self, func: AsyncMethod) -> None:
        self.func = func
        self.signature = inspect.signature(func)
        hints = typing.get_type_hints(func)
        self.adapters = {name: pydantic.TypeAdapter(hints.get(name, Any))
                         for name in self.signature.parameters}
        self.accepts_agent_id = "agent_id" in self.signature.parameters or any(
            p.kind is p.VAR_KEYWORD for p in self.signature.parameters.values())
        # The fast binding, for signatures whose parameters can all be passed by name.
        params = self.signature.parameters.values()
        self.by_name = all(p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY) for p in params)
        self.names = tuple(self.signature.parameters)
        self.positional = tuple(p.name for p in params if p.kind is p.POSITIONAL_OR_KEYWORD)
        self.required = frozenset(p.name for p in params if p.default is p.empty)
        self.unchanged = {name: _unchanged_types(hints.get(name, Any)) for name in self.names}
        self.kernel_names = tuple(n for n in _KERNEL_ARG_NAMES if n in self.names)
        self.session_names = tuple(n for n in _SESSION_ARG_NAMES if n in self.names)

    def bind_by_name(self, args: list[Any], kwargs: dict[str, Any]) -> dict[str, Any] | None:
        """The validated arguments by name, in the signature's order; None when the call is
        not a plain one (then :meth:`bind` decides, and words any error)."""
        if not self.by_name or len(args) > len(self.positional):
            return None
        given = dict(zip(self.positional, args, strict=False))
        for name, value in kwargs.items():
            if name in given or name not in self.unchanged:
                if name == "agent_id" and not self.accepts_agent_id:
                    continue
                return None
            given[name] = value
        if not self.required <= given.keys():
            return None
        arguments = {}
        for name in self.names:
            if name in given:
                value = given[name]
                unchanged = self.unchanged[name]
                if unchanged is not _PASS and (unchanged is None
                                               or type(value) not in unchanged):
                    value = self._validate(name, value)
                arguments[name] = value
        return arguments

    def bind(self, args: list[Any], kwargs: dict[str, Any]) -> inspect.BoundArguments:
        if not self.accepts_agent_id:
            kwargs = {k: v for k, v in kwargs.items() if k != "agent_id"}
        try:
            bound = self.signature.bind(*args, **kwargs)
        except TypeError as exc:
            raise InvalidArgument(str(exc)) from None
        for name, value in bound.arguments.items():
            bound.arguments[name] = self._validate(name, value)
        return bound

    def _validate(self, name: str, value: Any) -> Any:
        param = self.signature.parameters[name]
        adapter = self.adapters[name]
        try:
            if param.kind is param.VAR_POSITIONAL:
                return tuple(adapter.validate_python(v) for v in value)
            if param.kind is param.VAR_KEYWORD:
                return {k: adapter.validate_python(v) for k, v in value.items()}
            return adapter.validate_python(value)
        except pydantic.ValidationError as exc:
            first = exc.errors()[0]
            raise InvalidArgument(first["msg"], field=name,
                                  expected=str(param.annotation)) from None


def _hwinfo_v2(result: Any) -> Any:
    """``GatherHwinfoResp``: a device list whose metadata values are strings (the manager's
    model refuses anything else, so a plugin's number must not fail the whole call)."""
    if not isinstance(result, dict):
        return result
    devices = []
    for name, info in result.items():
        metadata = {str(k): v if isinstance(v, str) else json.dumps(v, default=str)
                    for k, v in (info.get("metadata") or {}).items()}
        devices.append({"device_name": name, **info, "metadata": metadata})
    return {"devices": devices}


def _kernel_of(arguments: typing.Mapping[str, Any], names: tuple[str, ...]) -> str | None:
    for name in names:
        value = arguments.get(name)
        if isinstance(value, (list, tuple)):
            return ",".join(str(v) for v in value) or None
        if value is not None:
            return str(value)
    return None


def _session_of(arguments: typing.Mapping[str, Any], names: tuple[str, ...]) -> str | None:
    for name in names:
        if value := arguments.get(name):
            return str(value)
    return None


class HandlerRegistry:
    """Maps wire method names to the facade's coroutine methods of the same name."""

    def __init__(self, facade: object) -> None:
        self._handlers: dict[str, _Handler] = {}
        for name in METHOD_NAMES:
            func = getattr(facade, name, None)
            if func is not None and inspect.iscoroutinefunction(func):
                self._handlers[name] = _Handler(func)

    @property
    def names(self) -> frozenset[str]:
        """The methods this facade actually serves (v3 fallbacks included)."""
        served = set(self._handlers)
        served.update(v3 for v3, v1 in V3_FALLBACKS.items() if v1 in self._handlers)
        return frozenset(served)

    def prepare(self, method: str, args: list[Any], kwargs: dict[str, Any]) -> PreparedCall:
        """Validate a call; raise MethodNotFound or InvalidArgument."""
        if method in V3_FALLBACKS and method not in self._handlers:
            return self._prepare_v3(method, args, kwargs)
        handler = self._handlers.get(method)
        if handler is None:
            raise MethodNotFound(f"unknown RPC method {method!r}", method=method)
        arguments = handler.bind_by_name(args, kwargs)
        if arguments is not None:
            return PreparedCall(method, _kernel_of(arguments, handler.kernel_names),
                                handler.func, (), arguments,
                                session_id=_session_of(arguments, handler.session_names))
        bound = handler.bind(args, kwargs)
        return PreparedCall(method, _kernel_of(bound.arguments, _KERNEL_ARG_NAMES), handler.func,
                            bound.args, bound.kwargs,
                            session_id=_session_of(bound.arguments, _SESSION_ARG_NAMES))

    def _prepare_v3(self, method: str, args: list[Any], kwargs: dict[str, Any]) -> PreparedCall:
        v1 = V3_FALLBACKS[method]
        handler = self._handlers.get(v1)
        if handler is None:
            raise MethodNotFound(f"unknown RPC method {method!r}", method=method)
        if args or not isinstance(kwargs.get("req"), dict):
            raise InvalidArgument("v3 call needs a 'req' mapping and no positional args",
                                  field="req")
        rest = {k: v for k, v in kwargs.items() if k != "req"}
        bound = handler.bind([], rest)
        convert = _hwinfo_v2 if v1 == "gather_hwinfo" else None
        return PreparedCall(method, None, handler.func, bound.args, bound.kwargs, convert)
