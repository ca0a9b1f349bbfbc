"""``berth kernel cp|ls-files``: copy files between here and a kernel, list a kernel's files.

Uploads go one file at a time through ``upload_file``; downloads come as one tar from
``download_file`` and are unpacked by ``berth.storage.extract_archive``, which refuses any
member that would land outside the destination before writing anything.
"""

from __future__ import annotations

import asyncio
import json
import os
import posixpath
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import click

from berth.cli import render
from berth.cli.render import Column
from berth.cli.state import get_state, json_option, run_with_client
from berth.cli.units import human_bytes
from berth.client import AgentClient
from berth.errors import BerthError, KernelNotFound
from berth.storage import extract_archive

__all__ = ["COMMANDS", "Location", "file_rows", "parse_location"]

WORK_DIR = "/home/work"

@dataclass(frozen=True)
class Location:
    """One side of ``kernel cp``: ``kernel_id`` is None for a local path."""

    path: str
    kernel_id: str | None = None


def parse_location(text: str) -> Location:
    """``ID:/home/work/x`` or ``ID:x`` → remote; anything else (``./a:b``, ``/a:b``) → local."""
    head, sep, tail = text.partition(":")
    if not sep or not head or "/" in head or head in (".", ".."):
        return Location(text)
    return Location(tail or WORK_DIR, head)



def _remote_join(base: str, *parts: str) -> str:
    return posixpath.join(base.rstrip("/") or "/", *parts)


async def _remote_is_dir(client: AgentClient, kernel_id: str, path: str) -> bool:
    if path.endswith("/") or posixpath.normpath(path) in (".", WORK_DIR):
        return True
    try:
        await client.list_files(kernel_id, path)
    except KernelNotFound:
        raise
    except BerthError:  # not there, or not a directory
        return False
    return True


def _local_files(src: Path) -> list[tuple[Path, tuple[str, ...]]]:
    """(file, path parts under src's name) for a file or a directory tree; links skipped."""
    if not src.is_dir():
        return [(src, ())]
    found = []
    for dirpath, _dirs, files in os.walk(src):
        for name in sorted(files):
            path = Path(dirpath, name)
            if path.is_symlink():
                click.echo(f"berth: skipped symbolic link {path}", err=True)
                continue
            found.append((path, path.relative_to(src).parts))
    return found


async def _upload(client: AgentClient, src: Path, dst: Location) -> list[str]:
    assert dst.kernel_id is not None
    if not src.exists():  # noqa: ASYNC240 - one stat of the path the user named
        raise click.BadParameter(f"{src}: no such file or directory")
    base = dst.path
    if await _remote_is_dir(client, dst.kernel_id, dst.path):
        base = _remote_join(dst.path, src.resolve().name)  # noqa: ASYNC240 - as above
    sent = []
    for path, parts in _local_files(src):
        remote = _remote_join(base, *parts) if parts else base
        await client.upload_file(dst.kernel_id, remote, path.read_bytes())
        sent.append(remote)
    return sent


async def _download(client: AgentClient, src: Location, dst: str) -> list[str]:
    assert src.kernel_id is not None
    data = await client.download_file(src.kernel_id, src.path)
    return await asyncio.to_thread(extract_archive, data, Path(dst),
                                   into_dir=dst.endswith(("/", os.sep)))


@click.command("cp")
@click.argument("src")
@click.argument("dst")
@json_option
@click.pass_context
def cp(ctx: click.Context, src: str, dst: str) -> None:
    """Copy files between a kernel and here: ID:/home/work/PATH ↔ local PATH."""
    state = get_state(ctx)
    source, dest = parse_location(src), parse_location(dst)
    if (source.kernel_id is None) == (dest.kernel_id is None):
        raise click.UsageError("exactly one of SRC and DST must be KERNEL_ID:PATH")
    if dest.kernel_id is not None:
        done = run_with_client(state, lambda c: _upload(c, Path(source.path), dest))
    else:
        done = run_with_client(state, lambda c: _download(c, source, dest.path))
    if state.as_json:
        render.emit_json({"copied": done})
    else:
        click.echo(f"copied {len(done)} entr{'y' if len(done) == 1 else 'ies'}")


FILE_COLUMNS = [Column("mode", "MODE", no_wrap=True), Column("size", "SIZE", right=True),
                Column("modified", "MODIFIED", 1, no_wrap=True), Column("filename", "NAME")]


def file_rows(reply: Mapping[str, Any]) -> list[dict[str, Any]]:
    """The entries of a ``list_files`` reply ("files" is a JSON string)."""
    raw = reply.get("files") or "[]"
    entries = json.loads(raw) if isinstance(raw, (str, bytes)) else list(raw)
    return [{**e, "modified": datetime.fromtimestamp(float(e.get("mtime", 0))).isoformat(
        sep=" ", timespec="seconds")} for e in entries]


@click.command("ls-files")
@click.argument("kernel_id")
@click.argument("path", default=WORK_DIR)
@json_option
@click.pass_context
def ls_files(ctx: click.Context, kernel_id: str, path: str) -> None:
    """List a directory of a kernel (default /home/work)."""
    state = get_state(ctx)
    reply = run_with_client(state, lambda c: c.list_files(kernel_id, path))
    if reply.get("errors"):
        click.echo(f"error: {reply['errors']}", err=True)
        ctx.exit(1)
    rows = file_rows(reply)
    if state.as_json:
        render.emit_json([{k: v for k, v in r.items() if k != "modified"} for r in rows])
    else:
        listing = [{**r, "size": human_bytes(r["size"]) if isinstance(r.get("size"), int)
                    else r.get("size")} for r in rows]
        render.show(render.table(listing, FILE_COLUMNS, title=str(reply.get("abspath") or path)))


COMMANDS = [cp, ls_files]
