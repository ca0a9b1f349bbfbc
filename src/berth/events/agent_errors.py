"""``agent_error`` events: failures on this node the Manager should see (its ``agent_error``
handler logs them in the error log with the user, severity and context it is given).

One path for all of them: the lifecycle's event emitter (``emit(name, payload)``). A failure that
repeats every cycle (a plugin whose measures keep failing, a periodic sync that keeps failing)
is reported once per ``key`` until it clears (:meth:`ErrorReporter.clear`), so the Manager's
error log is not flooded.
"""

from __future__ import annotations

import logging
import traceback as tb
from collections.abc import Callable, Mapping
from typing import Any

__all__ = ["ErrorReporter", "agent_error_payload"]

log = logging.getLogger(__name__)

Emit = Callable[..., None]


def agent_error_payload(message: str, *, source: str, severity: str = "ERROR",
                        exc: BaseException | None = None, user: str | None = None,
                        context: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """The ``agent_error`` body: ``context_env`` carries ``source`` (what failed: ``plugin``,
    ``reconcile``, ``lifecycle-sync``, ``restart``) and string values only."""
    env = {"source": source, **{k: str(v) for k, v in (context or {}).items()}}
    return {
        "message": message, "severity": severity.upper(), "user": user,
        "traceback": "".join(tb.format_exception(exc)) if exc is not None else None,
        "context_env": env,
    }


class ErrorReporter:
    """Emits ``agent_error`` through ``emit`` (the lifecycle's event adapter)."""

    def __init__(self, emit: Emit) -> None:
        self._emit = emit
        self._active: set[str] = set()
        self.reported = 0

    def report(self, message: str, *, source: str, severity: str = "ERROR",
               exc: BaseException | None = None, user: str | None = None,
               key: str | None = None, **context: Any) -> bool:
        """Emit one ``agent_error``; with ``key``, only the first until :meth:`clear`.
        Returns whether an event was emitted."""
        if key is not None:
            if key in self._active:
                return False
            self._active.add(key)
        try:
            self._emit("agent_error", agent_error_payload(
                message, source=source, severity=severity, exc=exc, user=user, context=context))
        except Exception:
            log.exception("could not emit agent_error for: %s", message)
            return False
        self.reported += 1
        return True

    def clear(self, key: str) -> None:
        """The failure behind ``key`` is over: its next occurrence is reported again."""
        self._active.discard(key)
