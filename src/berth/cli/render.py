"""Output: screens an operator reads (rich) by default, JSON for scripts (``--json``).

A screen is built of three shapes, as ``kubectl describe`` and ``docker ps`` print them:
``describe`` (``Label:  value`` rows, one concept per row), ``table`` (one row per thing; the
columns that do not fit the terminal are dropped, least important first, and what still does
not fit wraps inside its cell) and ``section`` (a heading with an indented body). Values the
screens do not know come out through ``nested``: a mapping becomes a sub-table, a list of
records a table, never ``key=value`` text. Widths are decided when the screen is printed, so
one screen reads at 80 columns and at 160.
"""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import IO, Any

import click
from rich import box
from rich.console import Console, ConsoleOptions, Group, RenderableType, RenderResult
from rich.measure import Measurement
from rich.padding import Padding
from rich.table import Table
from rich.text import Text

__all__ = [
    "PIPE_WIDTH",
    "Column",
    "FitTable",
    "cell",
    "console",
    "describe",
    "emit_json",
    "iter_mapping",
    "label",
    "lines",
    "nested",
    "section",
    "show",
    "table",
]

PIPE_WIDTH = 160
"""Width when standard output is not a terminal and ``COLUMNS`` is unset (a pipe, a file)."""


def _json_default(value: Any) -> Any:
    if isinstance(value, bytes):
        return value.decode("utf-8", "replace")
    if isinstance(value, datetime):
        return value.isoformat()
    return str(value)


def emit_json(value: Any) -> None:
    click.echo(json.dumps(value, indent=2, sort_keys=True, default=_json_default))


def console(file: IO[str] | None = None, width: int | None = None) -> Console:
    """The terminal's width; ``COLUMNS`` when set; :data:`PIPE_WIDTH` for a pipe."""
    if width is None and not os.environ.get("COLUMNS", "").isdigit():
        stream = file if file is not None else sys.stdout
        width = None if stream.isatty() else PIPE_WIDTH
    return Console(file=file, width=width, highlight=False, markup=False, emoji=False)


def show(*parts: RenderableType | None) -> None:
    """Print the parts of a screen, a blank line between them."""
    out = console()
    for index, part in enumerate(p for p in parts if p is not None):
        if index:
            out.print()
        out.print(part)


def cell(value: Any) -> str:
    """One value as text: ``-`` for nothing, ``yes``/``no``, lists joined by commas."""
    if value is None:
        return "-"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, Mapping):
        return ", ".join(f"{k}: {cell(v)}" for k, v in value.items()) or "-"
    if isinstance(value, (list, tuple)):
        return ", ".join(cell(v) for v in value) or "-"
    return str(value)


@dataclass(frozen=True)
class Column:
    """A table column: ``priority`` 0 is always shown; higher numbers are dropped first when
    the table is wider than the terminal."""

    key: str
    heading: str
    priority: int = 0
    no_wrap: bool = False
    right: bool = False
    max_width: int | None = None  # wider values wrap inside the cell


def _columns(columns: Sequence[Column | tuple[str, str]]) -> list[Column]:
    return [c if isinstance(c, Column) else Column(*c) for c in columns]


def _text_width(text: str) -> int:
    return max((Text(line).cell_len for line in text.splitlines()), default=0)


class FitTable:
    """Rows of text cells under headings; fitted to the width it is printed at."""

    def __init__(self, rows: Sequence[Mapping[str, Any]],
                 columns: Sequence[Column | tuple[str, str]], title: str | None = None) -> None:
        self.columns = _columns(columns)
        self.rows = [[cell(row.get(c.key)) for c in self.columns] for row in rows]
        self.title = title

    def fitted(self, width: int) -> list[int]:
        """Indexes of the columns shown at ``width``."""
        natural = [min(max([_text_width(c.heading)] + [_text_width(r[i]) for r in self.rows]),
                       c.max_width or width) + 3  # + padding and the separator
                   for i, c in enumerate(self.columns)]
        shown = list(range(len(self.columns)))
        for index in sorted(shown, key=lambda i: (-self.columns[i].priority, -i)):
            if sum(natural[i] for i in shown) - 3 <= width or self.columns[index].priority == 0:
                break
            shown.remove(index)
        return shown

    def build(self, width: int) -> Table:
        shown = self.fitted(width)
        out = Table(title=Text(self.title) if self.title else None, title_justify="left", title_style="bold",
                    box=box.SIMPLE_HEAD, pad_edge=False, show_edge=False, expand=False,
                    header_style="bold")
        for i in shown:
            col = self.columns[i]
            out.add_column(Text(col.heading), no_wrap=col.no_wrap, overflow="fold",
                           max_width=col.max_width,
                           justify="right" if col.right else "left")
        for row in self.rows:
            out.add_row(*(Text(row[i]) for i in shown))
        return out

    def __rich_console__(self, console: Console, options: ConsoleOptions) -> RenderResult:
        yield self.build(options.max_width)

    def __rich_measure__(self, console: Console, options: ConsoleOptions) -> Measurement:
        return Measurement.get(console, options, self.build(options.max_width))


def table(rows: Sequence[Mapping[str, Any]], columns: Sequence[Column | tuple[str, str]],
          title: str | None = None) -> FitTable:
    """One row per item, ``columns`` = [Column(key, heading, …) or (key, heading)]."""
    return FitTable(rows, columns, title)


def describe(fields: Iterable[tuple[str, Any]]) -> Table:
    """``Label:  value`` rows; a value may be text or any renderable (a sub-table)."""
    grid = Table.grid(padding=(0, 2))
    grid.add_column(style="bold", no_wrap=True)
    grid.add_column(overflow="fold")
    for label, value in fields:
        grid.add_row(f"{label}:", value if _is_renderable(value) else nested(value))
    return grid


def section(title: str, body: RenderableType) -> Group:
    """A heading with its body indented under it."""
    return Group(Text(title, style="bold"), Padding(body, (0, 0, 0, 2), expand=False))


def _is_renderable(value: Any) -> bool:
    return isinstance(value, (Text, Table, Group, Padding, FitTable))


def _records(value: Sequence[Any]) -> bool:
    return bool(value) and all(isinstance(v, Mapping) for v in value)


def label(key: str) -> str:
    """``container_id`` → ``Container id``; ``io_read`` → ``Io read``."""
    text = str(key).replace("_", " ").replace("-", " ")
    return text[:1].upper() + text[1:]


def nested(value: Any) -> RenderableType:
    """Any JSON value as a screen part: mappings as sub-tables, lists of records as tables."""
    if isinstance(value, Mapping) and value:  # its keys are data: shown as they are
        return describe((str(k), v) for k, v in value.items())
    if isinstance(value, (list, tuple)) and _records(value):
        keys = list(dict.fromkeys(k for v in value for k in v))
        return table(value, [(k, k.upper()) for k in keys])
    return Text(cell(value))


def lines(items: Iterable[str]) -> str:
    """Several values of one cell, one per line."""
    return "\n".join(items) or "-"


def iter_mapping(value: Any) -> Iterator[tuple[str, Any]]:
    """The items of ``value`` if it is a mapping, sorted by key; nothing otherwise."""
    if isinstance(value, Mapping):
        yield from sorted((str(k), v) for k, v in value.items())
