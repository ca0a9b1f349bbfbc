"""Output: readable tables (rich) by default, JSON for scripts."""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any

import click
from rich.console import Console
from rich.table import Table


def _json_default(value: Any) -> Any:
    if isinstance(value, bytes):
        return value.decode("utf-8", "replace")
    if isinstance(value, datetime):
        return value.isoformat()
    return str(value)


def emit_json(value: Any) -> None:
    click.echo(json.dumps(value, indent=2, sort_keys=True, default=_json_default))


def cell(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, Mapping):
        return ", ".join(f"{k}={cell(v)}" for k, v in value.items())
    if isinstance(value, (list, tuple)):
        return ", ".join(cell(v) for v in value)
    return str(value)


def table(rows: Sequence[Mapping[str, Any]], columns: Sequence[tuple[str, str]],
          title: str | None = None) -> None:
    """Print ``rows`` with ``columns`` = [(key, heading), ...]."""
    t = Table(title=title)
    for _, heading in columns:
        t.add_column(heading)
    for row in rows:
        t.add_row(*(cell(row.get(key)) for key, _ in columns))
    Console(width=160).print(t)


def mapping(value: Mapping[str, Any], title: str | None = None) -> None:
    table([{"k": k, "v": v} for k, v in value.items()], [("k", "field"), ("v", "value")], title)
