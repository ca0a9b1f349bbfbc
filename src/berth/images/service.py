"""Image service: decide what to pull, pull it as a background task with byte progress, purge.

Docker is reached only through the ``ImageBackend`` role (implemented over aiodocker in
``berth.backend.docker``).  The policy (``needs_pull``) and the progress arithmetic
(``PullProgress``) are pure.

Auto-pull policies (Backend.AI ``AutoPullBehavior``):
  * ``digest`` — pull unless the local image's Id equals the config's ``digest``;
  * ``tag``    — pull only when no local image carries the reference;
  * ``none``   — never pull; a missing image is an error.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any, Protocol

from berth.backend import ImageInfo
from berth.errors import BerthError, ImageNotAvailable, ImagePullFailed, InvalidArgument
from berth.events import (
    BackgroundTaskManager,
    EventEmitter,
    ImagePullFailedEvent,
    ImagePullFinishedEvent,
    ImagePullStartedEvent,
    ProgressReporter,
    TaskRecord,
)
from berth.kernel import ImageConfig as SpecImageConfig

log = logging.getLogger(__name__)

KERNELSPEC_LABEL = "ai.backend.kernelspec"
# The engine's architecture names → the manager's (Backend.AI's arch_name_aliases).
ARCH_ALIASES = {"amd64": "x86_64", "x86-64": "x86_64", "arm64": "aarch64",
                "arm64v8": "aarch64", "armv8": "aarch64"}
ImageConfig = Mapping[str, Any]
"""Backend.AI ``ImageConfig``: canonical, digest, architecture, registry{name,url,username,
password}, labels, is_local, auto_pull."""


class AutoPullPolicy(StrEnum):
    DIGEST = "digest"
    TAG = "tag"
    NONE = "none"


class ImageBackend(Protocol):
    """What the image service needs from the container engine (``DockerBackend`` fits it).

    ``image_pull`` yields Docker's pull-stream JSON objects (``status``, ``id``,
    ``progressDetail {current,total}``, or ``error``/``errorDetail``) and raises a
    ``BerthError`` (``ImageNotAvailable``/``ImagePullFailed``) when the engine refuses the pull
    outright.  ``image_inspect`` returns None when absent.  ``image_remove`` raises
    ``ImageNotAvailable`` (404) or another ``BerthError`` (409 in use).
    """

    def image_pull(self, ref: str, auth: Mapping[str, str] | None = None
                   ) -> AsyncIterator[Mapping[str, Any]]: ...

    async def image_inspect(self, ref: str) -> ImageInfo | None: ...

    async def image_remove(self, ref: str, *, force: bool = False,
                           noprune: bool = False) -> None: ...

    async def image_list(self) -> list[ImageInfo]: ...


def needs_pull(config: ImageConfig, local: ImageInfo | None,
               policy: AutoPullPolicy) -> bool:
    """Pure policy decision; raises ``ImageNotAvailable`` for a missing image under ``none``."""
    if policy is AutoPullPolicy.NONE:
        if local is None:
            raise ImageNotAvailable(f"image {config['canonical']} is not present and "
                                    "auto-pull is 'none'", image=config["canonical"])
        return False
    if local is None:
        return True
    if policy is AutoPullPolicy.DIGEST and config.get("digest"):
        return bool(local.id != config["digest"])
    return False


def checked_image_configs(image_configs: Any) -> dict[str, ImageConfig]:
    """``check_and_pull``'s argument, every image config checked before anything starts; a
    malformed one is InvalidArgument naming its key."""
    if not isinstance(image_configs, Mapping):
        raise InvalidArgument("image_configs is a map of keys to image configs",
                              field="image_configs")
    for key, config in image_configs.items():
        try:
            SpecImageConfig.model_validate(dict(config))
            AutoPullPolicy(config.get("auto_pull") or AutoPullPolicy.DIGEST)
        except (TypeError, ValueError, AttributeError) as exc:  # pydantic's errors are ValueErrors
            raise InvalidArgument(f"image_configs[{key!r}] is not an image config: {exc}",
                                  field=f"image_configs.{key}") from exc
    return {str(key): config for key, config in image_configs.items()}


def engine_ref(config: ImageConfig) -> str:
    """The name the engine knows the image by (see ``berth.kernel.spec.ImageConfig.ref``)."""
    return SpecImageConfig.model_validate(dict(config)).ref


def wire_image_ref(config: ImageConfig) -> dict[str, Any] | None:
    """The manager's ``ImageRef`` object for image events (``name, project, tag, registry,
    architecture, is_local``), or None when the canonical cannot be split that way (the
    manager then resolves the image by its ``image`` string)."""
    canonical = str(config["canonical"])
    registry = str((config.get("registry") or {}).get("name") or "")
    project = config.get("project") or None
    rest = canonical[len(registry) + 1:] if registry and canonical.startswith(registry + "/") \
        else canonical
    if "@" in rest or ":" not in rest.rsplit("/", 1)[-1]:
        return None
    repo, tag = rest.rsplit(":", 1)
    if project and repo == project:
        name = ""
    elif project and repo.startswith(project + "/"):
        name = repo[len(project) + 1:]
    elif project:
        return None
    else:
        name = repo
    return {"name": name, "project": project, "tag": tag, "registry": registry or "",
            "architecture": str(config.get("architecture") or "x86_64"),
            "is_local": bool(config.get("is_local"))}


def registry_auth(config: ImageConfig) -> dict[str, str] | None:
    reg = config.get("registry") or {}
    if not reg.get("username"):
        return None
    return {"username": reg["username"], "password": reg.get("password") or "",
            "serveraddress": reg.get("url") or reg.get("name") or ""}


def _pull_failed(detail: str) -> BerthError:
    return ImagePullFailed(f"pull failed: {detail}", reason=detail)


@dataclass
class LayerProgress:
    """Sums per-layer byte counts from the engine's pull (or push) stream events; an ``error``
    event raises what ``fail`` makes of its message."""

    active: str = "Downloading"
    done: tuple[str, ...] = ("Download complete", "Pull complete")
    fail: Callable[[str], BerthError] = _pull_failed
    layers: dict[str, tuple[int, int]] = field(default_factory=dict)

    def feed(self, ev: Mapping[str, Any]) -> bool:
        """Account one stream event; True when the byte totals changed."""
        if "error" in ev or "errorDetail" in ev:
            detail = (ev.get("errorDetail") or {}).get("message") or ev.get("error")
            raise self.fail(str(detail))
        layer, status = ev.get("id"), str(ev.get("status", ""))
        if not layer:
            return False
        detail = ev.get("progressDetail") or {}
        if status == self.active and detail.get("total"):
            self.layers[layer] = (int(detail.get("current", 0)), int(detail["total"]))
            return True
        if status in self.done and layer in self.layers:
            total = self.layers[layer][1]
            changed = self.layers[layer] != (total, total)
            self.layers[layer] = (total, total)
            return changed
        return False

    @property
    def current(self) -> int:
        return sum(c for c, _ in self.layers.values())

    @property
    def total(self) -> int:
        return sum(t for _, t in self.layers.values())


PullProgress = LayerProgress


@dataclass(frozen=True)
class PurgeResult:
    removed: list[str]
    failed: dict[str, str]


class ImageService:
    def __init__(self, backend: ImageBackend, tasks: BackgroundTaskManager, bus: EventEmitter,
                 *, agent_id: str = "", pull_timeout: float = 7200.0) -> None:
        self._backend = backend
        self._tasks = tasks
        self._bus = bus
        self._agent_id = agent_id
        self._pull_timeout = pull_timeout
        self._active: dict[str, str] = {}
        self._arch: dict[str, str] = {}  # image id → architecture, for the installed list

    async def check_and_pull(self, image_configs: Mapping[str, ImageConfig]) -> dict[str, str]:
        """Start one pull task per image that needs it; return ``{key: task_id}``.

        Images that need nothing are left out.  An image already being pulled returns the
        running task's id.  An image missing under policy ``none`` gets a task that fails with
        the reason, so the Manager hears about it the same way as about a failed pull.
        """
        result: dict[str, str] = {}
        for key, config in checked_image_configs(image_configs).items():
            task_id = await self._check_one(config)
            if task_id is not None:
                result[key] = task_id
        return result

    async def _check_one(self, config: ImageConfig) -> str | None:
        canonical = str(config["canonical"])
        if canonical in self._active:
            return self._active[canonical]
        # A local image is never pulled: it is there, or the create will fail naming it.
        policy = (AutoPullPolicy.NONE if config.get("is_local")
                  else AutoPullPolicy(config.get("auto_pull") or AutoPullPolicy.DIGEST))
        try:
            if not needs_pull(config, await self._backend.image_inspect(engine_ref(config)),
                              policy):
                # The manager waits for an image event per image it asked about.
                self._emit_finished(config, "Image already exists")
                return None
        except ImageNotAvailable as exc:
            return self._start_failed(config, exc)
        return self.start_pull(config)

    def _emit_finished(self, config: ImageConfig, msg: str | None = None) -> None:
        self._bus.emit(ImagePullFinishedEvent(
            image=str(config["canonical"]), agent_id=self._agent_id,
            image_ref=wire_image_ref(config), timestamp=time.time(), msg=msg))

    def _emit_failed(self, config: ImageConfig, msg: str) -> None:
        self._bus.emit(ImagePullFailedEvent(
            image=str(config["canonical"]), agent_id=self._agent_id,
            image_ref=wire_image_ref(config), msg=msg))

    def start_pull(self, config: ImageConfig) -> str:
        canonical = str(config["canonical"])

        async def job(reporter: ProgressReporter) -> str:
            try:
                return await self._pull(config, reporter)
            finally:
                self._active.pop(canonical, None)

        task_id = self._tasks.start(job, name=f"pull {canonical}")
        self._active[canonical] = task_id
        return task_id

    def _start_failed(self, config: ImageConfig, exc: BerthError) -> str:
        async def job(reporter: ProgressReporter) -> str:
            self._emit_failed(config, str(exc))
            raise exc
        return self._tasks.start(job, name=f"pull {config['canonical']}")

    async def pull_and_wait(self, config: ImageConfig) -> TaskRecord:
        """Pull now (used by kernel creation in PULLING) and wait for the task to end."""
        return await self._tasks.wait(self.start_pull(config))

    async def _pull(self, config: ImageConfig, reporter: ProgressReporter) -> str:
        canonical = str(config["canonical"])
        self._bus.emit(ImagePullStartedEvent(image=canonical, agent_id=self._agent_id,
                                             image_ref=wire_image_ref(config),
                                             timestamp=time.time()))
        try:
            async with asyncio.timeout(self._pull_timeout):
                await self._stream(canonical, registry_auth(config), reporter)
            if await self._backend.image_inspect(canonical) is None:
                raise ImagePullFailed(f"{canonical} absent after pull", reason="absent after pull")
        except (BerthError, TimeoutError) as exc:
            msg = str(exc) if isinstance(exc, BerthError) else f"pull timed out ({exc!r})"
            self._emit_failed(config, msg)
            log.warning("pull of %s failed: %s", canonical, msg)
            raise
        self._emit_finished(config)
        log.info("pulled %s", canonical)
        return f"pulled {canonical}"

    async def _stream(self, ref: str, auth: Mapping[str, str] | None,
                      reporter: ProgressReporter) -> None:
        progress = PullProgress()
        async for ev in self._backend.image_pull(ref, auth):
            if progress.feed(ev):
                reporter.set(progress.current, progress.total)

    async def purge_images(self, refs: Sequence[str], *, force: bool = False) -> PurgeResult:
        """Remove the given images; those in use (or otherwise refused) are reported, not raised."""
        removed: list[str] = []
        failed: dict[str, str] = {}
        for ref in refs:
            try:
                await self._backend.image_remove(ref, force=force)
            except BerthError as exc:
                failed[ref] = str(exc)
                continue
            removed.append(ref)
        log.info("purged %d images (%d refused)", len(removed), len(failed))
        return PurgeResult(removed, failed)

    async def list_installed(self, *, kernel_only: bool = True) -> list[dict[str, str]]:
        """``[{canonical, digest, architecture}]`` as written to ``installed_image:{agent_id}``;
        the manager matches images by canonical *and* architecture, in its own naming."""
        out: list[dict[str, str]] = []
        images = await self._backend.image_list()
        known = {img.id for img in images}
        self._arch = {k: v for k, v in self._arch.items() if k in known}
        for img in images:
            if kernel_only and KERNELSPEC_LABEL not in img.labels:
                continue
            arch = await self._architecture(img)
            out.extend({"canonical": tag, "digest": img.id, "architecture": arch}
                       for tag in img.tags if tag != "<none>:<none>")
        return out

    async def _architecture(self, img: ImageInfo) -> str:
        """The image's architecture (the engine's image list lacks it: inspected once per
        image id and cached), as the manager names it."""
        arch = img.architecture or self._arch.get(img.id, "")
        if not arch:
            info = await self._backend.image_inspect(img.id)
            arch = info.architecture if info is not None else ""
            self._arch[img.id] = arch
        return ARCH_ALIASES.get(arch, arch)
