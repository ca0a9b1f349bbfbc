"""``berth image``: pull through the agent (with a progress bar) and list images on this node's
Docker engine.

``pull`` asks the agent (``check_and_pull``, as the Manager does), so the pull is the agent's
background task: the Manager hears ``bgtask_*`` and ``image_pull_*`` events, and the CLI follows
the task's progress in ``get_status`` (``bgtasks``) until it ends.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Protocol

import click
from rich.progress import BarColumn, DownloadColumn, Progress, TextColumn, TransferSpeedColumn

from berth.cli import render
from berth.cli.render import Column
from berth.cli.state import get_state, run_with_client
from berth.client import AgentClient

if TYPE_CHECKING:  # the image service pulls in Docker and Redis: loaded by ``image ls`` only
    from berth.events import AgentEvent
    from berth.images import ImageBackend

    class ClosableImageBackend(ImageBackend, Protocol):
        async def close(self) -> None: ...


def _docker_backend() -> ClosableImageBackend:
    from berth.backend import DockerBackend

    return DockerBackend()


IMAGE_COLUMNS = [Column("canonical", "IMAGE"), Column("digest", "ID", 1, no_wrap=True),
                 Column("architecture", "ARCH", 2)]


def short_digest(digest: str) -> str:
    """``sha256:0123456789ab…`` → ``0123456789ab`` (``docker images``' IMAGE ID)."""
    return digest.partition(":")[2][:12] if ":" in digest else digest[:12]


open_backend: Callable[[], ClosableImageBackend] = _docker_backend
"""Factory used by the commands; tests replace it with an in-memory backend."""


class _NullEmitter:
    """``image ls`` reads the engine through an ImageService; it emits nothing."""

    def emit(self, event: AgentEvent, *, coalesce: bool = False) -> None:
        return None


async def follow_pull(client: AgentClient, ref: str, config: dict[str, Any], quiet: bool,
                      interval: float = 0.25) -> str | None:
    """Ask the agent to pull ``ref`` and follow its background task to the end."""
    from berth.events import TaskStatus

    ids = await client.check_and_pull({ref: config})
    task_id = (ids or {}).get(ref)
    if not task_id:
        return "up to date"
    with Progress(TextColumn("{task.description}"), BarColumn(), DownloadColumn(),
                  TransferSpeedColumn(), disable=quiet) as progress:
        bar = progress.add_task(ref, total=None)
        while True:
            record = ((await client.get_status()).get("bgtasks") or {}).get(task_id)
            if record is None:
                raise click.ClickException(f"the agent no longer knows pull task {task_id}")
            if float(record.get("total") or 0) > 0:
                progress.update(bar, completed=float(record["current"]),
                                total=float(record["total"]))
            if record.get("status") != TaskStatus.RUNNING:
                break
            await asyncio.sleep(interval)
    if record.get("status") != TaskStatus.DONE:
        raise click.ClickException(f"pull of {ref} failed: {record.get('message')}")
    message = record.get("message")
    return str(message) if message is not None else None


async def _list(all_images: bool) -> list[dict[str, str]]:
    from berth.events import BackgroundTaskManager
    from berth.images import ImageService

    backend = open_backend()
    try:
        null = _NullEmitter()
        svc = ImageService(backend, BackgroundTaskManager(null), null)
        return await svc.list_installed(kernel_only=not all_images)
    finally:
        await backend.close()


@click.group("image")
def image_group() -> None:
    """Images: pulled through the agent, listed from this node's Docker engine."""


@image_group.command("pull")
@click.argument("ref")
@click.option("--policy", type=click.Choice(["digest", "tag", "none"]), default="tag",
              show_default=True, help="auto-pull policy deciding whether to pull")
@click.option("--username", default=None, help="registry user")
@click.option("--password", default=None, envvar="BERTH_REGISTRY_PASSWORD",
              help="registry password (env BERTH_REGISTRY_PASSWORD)")
@click.option("-q", "--quiet", is_flag=True, help="no progress bar")
@click.pass_context
def pull_cmd(ctx: click.Context, ref: str, policy: str, username: str | None,
             password: str | None, quiet: bool) -> None:
    """Pull REF on the agent's node (its background task), with a byte progress bar."""
    auth = {"username": username, "password": password or "",
            "url": ref.split("/", 1)[0]} if username else None
    config: dict[str, Any] = {"canonical": ref, "auto_pull": policy, "digest": "",
                              "registry": auth or {}, "is_local": False}
    message = run_with_client(get_state(ctx),
                              lambda client: follow_pull(client, ref, config, quiet))
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
    render.show(render.table([{**img, "digest": short_digest(img.get("digest", ""))}
                              for img in images], IMAGE_COLUMNS))
