"""Exceptions ↔ callosum's ``[name, repr, traceback]`` error triple.

For a :class:`~berth.errors.BerthError` the traceback text ends with one line
``berth-error-data: {json}`` carrying the error's data, so that Berth's client can rebuild the
typed error (with ``kernel_id``, ``field``, …); other peers simply see it as traceback text.
"""

from __future__ import annotations

import json
import traceback
from typing import Any

from berth import errors
from berth.errors import BerthError, RemoteError

DATA_PREFIX = "berth-error-data: "


def describe(exc: BaseException) -> tuple[str, str, str]:
    """The FAILURE/ERROR triple for ``exc``."""
    tb = "".join(traceback.format_exception(exc))
    if isinstance(exc, BerthError):
        tb += DATA_PREFIX + json.dumps(exc.to_dict(), default=str) + "\n"
    return type(exc).__name__, repr(exc), tb


def _error_data(tb: str) -> dict[str, Any] | None:
    for line in reversed(tb.splitlines()):
        if line.startswith(DATA_PREFIX):
            try:
                data = json.loads(line[len(DATA_PREFIX):])
            except ValueError:
                return None
            return data if isinstance(data, dict) else None
    return None


def _berth_class(name: str) -> type[BerthError] | None:
    cls = getattr(errors, name, None)
    if isinstance(cls, type) and issubclass(cls, BerthError) and cls is not RemoteError:
        return cls
    return None


def rebuild(name: str, representation: str, tb: str,
            default: type[BerthError] = RemoteError) -> BerthError:
    """Turn a remote error triple into the matching Berth error, else ``default``.

    The rebuilt error carries ``remote`` (a :class:`RemoteError` with the remote traceback).
    """
    remote = RemoteError(name, representation, tb)
    cls = _berth_class(name)
    if cls is None:
        if default is RemoteError:
            return remote
        cls = default
    data = _error_data(tb) or {}
    message = str(data.pop("message", "") or representation)
    data.pop("type", None)
    exc = cls.__new__(cls)
    BerthError.__init__(exc, message, **data)
    for key, value in data.items():
        setattr(exc, key, value)
    exc.remote = remote  # type: ignore[attr-defined]
    return exc
