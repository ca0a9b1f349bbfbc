"""``berth image``: pull (with a progress bar) and list images on this node's Docker engine."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from typing import Any, Protocol

import click
from rich.progress import BarColumn, DownloadColumn, Progress, TextColumn, TransferSpeedColumn

from berth.bgtask import BackgroundTaskManager, TaskStatus
from berth.events.models import AgentEvent, BgtaskUpdatedEvent
from berth.images import ImageBackend, ImageService


class ClosableImageBackend(ImageBackend, Protocol):
    async def close(self) -> None: ...


def _docker_backend() -> ClosableImageBackend:
    from berth.backend.docker import DockerBackend

    return DockerBackend()


open_backend: Callable[[], ClosableImageBackend] = _docker_backend
"""Factory used by the commands; tests replace it with an in-memory backend."""


class _NullEmitter:
    """The CLI shows the bar only; image_pull_* events have no Manager to go to here."""

    def emit(self, event: AgentEvent, *, coalesce: bool = False) -> None:
        return None


class _ProgressEmitter:
    """Renders bgtask_updated byte counts on a rich progress bar."""

    def __init__(self, progress: Progress, label: str) -> None:
        self._progress = progress
        self._bar = progress.add_task(label, total=None)

    def emit(self, event: AgentEvent, *, coalesce: bool = False) -> None:
        if isinstance(event, BgtaskUpdatedEvent) and event.total_progress > 0:
            self._progress.update(self._bar, completed=event.current_progress,
                                  total=event.total_progress)


async def _pull(ref: str, policy: str, auth: dict[str, str] | None, quiet: bool) -> str | None:
    backend = open_backend()
    config: dict[str, Any] = {"canonical": ref, "auto_pull": policy, "digest": "",
                              "registry": auth or {}}
    try:
        with Progress(TextColumn("{task.description}"), BarColumn(), DownloadColumn(),
                      TransferSpeedColumn(), disable=quiet) as progress:
            tasks = BackgroundTaskManager(_ProgressEmitter(progress, ref), progress_interval=0.1)
            ids = await ImageService(backend, tasks, _NullEmitter()).check_and_pull({ref: config})
            if not ids:
                return "up to date"
            rec = await tasks.wait(ids[ref])
        if rec.status is not TaskStatus.DONE:
            raise click.ClickException(f"pull of {ref} failed: {rec.message}")
        return rec.message
    finally:
        await backend.close()


async def _list(all_images: bool) -> list[dict[str, str]]:
    backend = open_backend()
    try:
        null = _NullEmitter()
        svc = ImageService(backend, BackgroundTaskManager(null), null)
        return await svc.list_installed(kernel_only=not all_images)
    finally:
        await backend.close()


@click.group("image")
def image_group() -> None:
    """Images on this node's Docker engine."""


@image_group.command("pull")
@click.argument("ref")
@click.option("--policy", type=click.Choice(["digest", "tag", "none"]), default="tag",
              show_default=True, help="auto-pull policy deciding whether to pull")
@click.option("--username", default=None, help="registry user")
@click.option("--password", default=None, envvar="BERTH_REGISTRY_PASSWORD",
              help="registry password (env BERTH_REGISTRY_PASSWORD)")
@click.option("-q", "--quiet", is_flag=True, help="no progress bar")
def pull_cmd(ref: str, policy: str, username: str | None, password: str | None,
             quiet: bool) -> None:
    """Pull REF with a byte progress bar."""
    auth = {"username": username, "password": password or "",
            "url": ref.split("/", 1)[0]} if username else None
    message = asyncio.run(_pull(ref, policy, auth, quiet))
    click.echo(f"{ref}: {message}")


@image_group.command("ls")
@click.option("-a", "--all", "all_images", is_flag=True,
              help="also images without the ai.backend.kernelspec label")
@click.option("--json", "as_json", is_flag=True)
def ls_cmd(all_images: bool, as_json: bool) -> None:
    """List installed (kernel) images."""
    images = asyncio.run(_list(all_images))
    if as_json:
        click.echo(json.dumps(images, indent=2))
        return
    for img in images:
        click.echo(f"{img['canonical']:60} {img['digest'][:19]:20} {img['architecture']}")
