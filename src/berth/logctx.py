"""Log context: the kernel, session and RPC method a piece of work is about, on every record.

One :class:`~contextvars.ContextVar` holds the fields; :func:`bound` sets them for a block (a
kernel's lifecycle step), :func:`bind` for the rest of a task (an RPC request), and asyncio
tasks inherit them from where they were spawned. :func:`install` (called by the daemon's
logging setup on each of its handlers, never by library code) adds a :class:`ContextFilter`
that copies the fields onto every record the handler sees (``record.kernel_id`` ...), so
formatters and handlers can use them: the JSON formatter prints them, the Loki shipper labels
its streams with ``kernel_id``. Records carry every field (``""`` when unbound); a field given
with ``extra={"kernel_id": ...}`` wins.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from contextvars import ContextVar
from types import MappingProxyType

__all__ = ["FIELDS", "ContextFilter", "bind", "bound", "current", "install"]

FIELDS = ("kernel_id", "session_id", "rpc_method")

_CONTEXT: ContextVar[Mapping[str, str]] = ContextVar("berth_log_context",
                                                     default=MappingProxyType({}))


def current() -> Mapping[str, str]:
    """The fields bound here (only those with a value)."""
    return _CONTEXT.get()


def _merged(fields: Mapping[str, str | None]) -> dict[str, str]:
    unknown = set(fields) - set(FIELDS)
    if unknown:
        raise ValueError(f"unknown log context fields: {sorted(unknown)}")
    return {**_CONTEXT.get(), **{k: str(v) for k, v in fields.items() if v}}


@contextmanager
def bound(**fields: str | None) -> Iterator[None]:
    """Bind ``fields`` (None or "" leave a field as it was) for the duration of the block."""
    token = _CONTEXT.set(_merged(fields))
    try:
        yield
    finally:
        _CONTEXT.reset(token)


def bind(**fields: str | None) -> None:
    """Bind ``fields`` for the rest of the current task (its context ends with it)."""
    _CONTEXT.set(_merged(fields))


class ContextFilter(logging.Filter):
    """Copies the bound fields onto each record it sees (a field given with ``extra=`` wins)."""

    def filter(self, record: logging.LogRecord) -> bool:
        context = _CONTEXT.get()
        for name in FIELDS:
            if not getattr(record, name, ""):
                setattr(record, name, context.get(name, ""))
        return True


def install(handler: logging.Handler) -> logging.Handler:
    """Give ``handler`` the context fields on every record (idempotent); returns it."""
    if not any(isinstance(f, ContextFilter) for f in handler.filters):
        handler.addFilter(ContextFilter())
    return handler
