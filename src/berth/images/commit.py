"""Customised images: commit a running kernel's container, export it to a file, push images.

``commit`` and ``push_image`` answer ``{"bgtask_id": ...}`` at once and do the work as a
background task (``bgtask_updated`` progress, then ``bgtask_done`` or ``bgtask_failed``), which
is what the Manager waits for. The engine is reached through the ``CommitBackend`` role; the
decisions (which tag, which labels, where a file may go, which credentials) are pure functions.

* A commit tags the new image ``canonical`` unless that is the kernel's own image (the Manager's
  commit-to-file passes the kernel's image name): moving the base image's tag would hand every
  later kernel of that image this container's files. Such a commit stays untagged and is
  removed again once exported.
* The labels Berth puts on a kernel's container (owner, kernel and session ids, service ports)
  are set back to the base image's values (or emptied): a container started from the committed
  image must not look like a kernel of this agent. The Manager's ``extra_labels`` go on top.
* An export goes to ``{image-commit-path}/{subdir}/{filename}`` (``subdir`` is the user's email
  as the Manager sends it); both must be single plain path components. The file is written
  under a temporary name and renamed when complete; a name ending in ``.gz`` is gzipped.
"""

from __future__ import annotations

import asyncio
import logging
import os
import re
import zlib
from collections.abc import AsyncIterator, Mapping
from pathlib import Path
from typing import Any, Protocol

from berth.backend import ImageInfo
from berth.errors import (
    BerthError,
    ImageNotAvailable,
    ImagePushFailed,
    InvalidArgument,
    KernelStateError,
)
from berth.events import BackgroundTaskManager, ProgressReporter
from berth.images.service import LayerProgress
from berth.kernel import WARM_ID_LABEL, WARM_POOL_LABEL
from berth.types import (
    AGENT_ID_LABEL,
    KERNEL_ID_LABEL,
    OWNER_LABEL,
    SESSION_ID_LABEL,
)

__all__ = [
    "CONTAINER_LABELS",
    "CommitBackend",
    "ImageCommitService",
    "LayerProgress",
    "commit_labels",
    "commit_target",
    "export_path",
    "push_auth",
    "ref_of",
]

log = logging.getLogger(__name__)

# Labels the agent sets on a kernel's container (kernel/container_config.py), which a commit
# would otherwise bake into the image.
CONTAINER_LABELS = (
    OWNER_LABEL, AGENT_ID_LABEL, KERNEL_ID_LABEL, SESSION_ID_LABEL, "ai.backend.owner-user-id",
    "ai.backend.owner-project-id", "ai.backend.service-ports",
    "ai.backend.internal.block-service-ports", WARM_POOL_LABEL, WARM_ID_LABEL,
)
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")


class CommitBackend(Protocol):
    """What commits and pushes need from the container engine (``DockerBackend`` fits it)."""

    async def commit(self, container_id: str, *, repository: str | None = None,
                     tag: str | None = None, labels: Mapping[str, str] | None = None,
                     author: str | None = None) -> str: ...

    def image_export(self, ref: str) -> AsyncIterator[bytes]: ...

    def image_push(self, ref: str, auth: Mapping[str, str] | None = None
                   ) -> AsyncIterator[dict[str, Any]]: ...

    async def image_inspect(self, ref: str) -> ImageInfo | None: ...

    async def image_remove(self, ref: str, *, force: bool = False,
                           noprune: bool = False) -> None: ...


# ───────────────────────────────────────────────────────────────── pure decisions


def split_ref(ref: str) -> tuple[str, str]:
    """``registry:port/name:tag`` → (``registry:port/name``, ``tag``); no tag means latest."""
    repo, sep, tag = ref.rpartition(":")
    if not sep or "/" in tag:
        return ref, "latest"
    return repo, tag


def commit_target(canonical: str | None, base_image: str) -> tuple[str, str] | None:
    """The (repository, tag) to commit to, or None for an untagged image."""
    if not canonical or not canonical.strip():
        return None
    canonical = canonical.strip()
    if _CONTROL.search(canonical) or " " in canonical:
        raise InvalidArgument(f"{canonical!r} is not an image reference", field="canonical")
    if split_ref(canonical) == split_ref(base_image):
        return None  # never move the kernel's own image tag
    return split_ref(canonical)


def commit_labels(image_labels: Mapping[str, str],
                  extra_labels: Mapping[str, str] | None) -> dict[str, str]:
    """Container-only labels back to the image's values, then the Manager's extra labels."""
    labels = {name: image_labels.get(name, "") for name in CONTAINER_LABELS}
    for key, value in (extra_labels or {}).items():
        key, value = str(key), str(value)
        if not key or _CONTROL.search(key) or _CONTROL.search(value):
            raise InvalidArgument(f"label {key!r} has an empty name or a control character",
                                  field="extra_labels")
        labels[key] = value
    return labels


def _component(text: str, field: str) -> str:
    if (not text or text in (".", "..") or "/" in text or "\\" in text or "\x00" in text
            or len(text.encode()) > 255):
        raise InvalidArgument(f"{text!r} is not a plain file name", field=field)
    return text


def export_path(root: Path, subdir: str, filename: str) -> Path:
    """Where an export goes: strictly inside ``root``, one level of ``subdir``."""
    path = root / _component(subdir, "email") / _component(filename, "filename")
    resolved_root = root.resolve()
    if not path.resolve().is_relative_to(resolved_root):  # a link planted in root
        raise InvalidArgument(f"{filename!r} leaves the commit directory", field="filename")
    return path


def ref_of(image_ref: Any) -> tuple[str, bool]:
    """(canonical reference, is_local) of an ImageRef as it arrives: a plain dict of its
    fields (``registry``, ``project``, ``name``, ``tag``, ``is_local``), a dict with
    ``canonical``, or a string."""
    if isinstance(image_ref, str):
        ref, is_local = image_ref, False
    elif isinstance(image_ref, Mapping):
        is_local = bool(image_ref.get("is_local", False))
        if image_ref.get("canonical"):
            ref = str(image_ref["canonical"])
        else:
            name, tag = image_ref.get("name"), image_ref.get("tag")
            if not name or not tag:
                raise InvalidArgument("image_ref needs a name and a tag", field="image_ref")
            path = "/".join(str(p) for p in (image_ref.get("registry"),
                                              image_ref.get("project"), name) if p)
            ref = f"{path}:{tag}"
    else:
        raise InvalidArgument("image_ref must be a mapping or a string", field="image_ref")
    if not ref.strip() or _CONTROL.search(ref) or " " in ref:
        raise InvalidArgument(f"{ref!r} is not an image reference", field="image_ref")
    return ref, is_local


def push_auth(registry: Mapping[str, Any] | None, ref: str) -> dict[str, str] | None:
    """X-Registry-Auth fields for ``registry`` (``{name, url, username, password}``)."""
    if not registry or not registry.get("username"):
        return None
    return {"username": str(registry["username"]),
            "password": str(registry.get("password") or ""),
            "serveraddress": ref.split("/", 1)[0]}


def _push_failed(detail: str) -> BerthError:
    return ImagePushFailed(f"push failed: {detail}", reason=detail)


def push_progress() -> LayerProgress:
    """Byte progress of a push stream (``Pushing`` … ``Pushed`` / ``Layer already exists``)."""
    return LayerProgress(active="Pushing", done=("Pushed", "Layer already exists"),
                         fail=_push_failed)


# ───────────────────────────────────────────────────────────────── the service


class ImageCommitService:
    def __init__(self, backend: CommitBackend, tasks: BackgroundTaskManager, commit_root: Path,
                 *, commit_timeout: float | None = None,
                 push_timeout: float | None = None) -> None:
        self._backend = backend
        self._tasks = tasks
        self.commit_root = commit_root
        self._commit_timeout = commit_timeout
        self._push_timeout = push_timeout
        self.ongoing: dict[str, str] = {}  # kernel id → bgtask id of its running commit

    def status(self, kernel_id: str) -> str:
        """Backend.AI's commit status: ``ongoing`` while a commit of the kernel runs."""
        return "ongoing" if kernel_id in self.ongoing else "ready"

    def start_commit(self, *, kernel_id: str, container_id: str, subdir: str,
                     base_image: str, image_labels: Mapping[str, str],
                     canonical: str | None = None,
                     extra_labels: Mapping[str, str] | None = None,
                     filename: str | None = None) -> str:
        """Validate now (errors reach the caller), commit in the background; the task id."""
        if kernel_id in self.ongoing:
            raise KernelStateError(f"kernel {kernel_id} is already being committed",
                                   kernel_id=kernel_id)
        target = commit_target(canonical, base_image)
        labels = commit_labels(image_labels, extra_labels)
        path = export_path(self.commit_root, subdir, filename) if filename else None
        if target is None and path is None:
            raise InvalidArgument("a commit needs a new image name (canonical) or a filename",
                                  field="canonical")

        async def job(reporter: ProgressReporter) -> str:
            try:
                async with asyncio.timeout(self._commit_timeout):
                    return await self._commit(reporter, container_id, target, labels, path)
            finally:
                self.ongoing.pop(kernel_id, None)

        task_id = self._tasks.start(job, name=f"commit {kernel_id}")
        self.ongoing[kernel_id] = task_id
        return task_id

    async def _commit(self, reporter: ProgressReporter, container_id: str,
                      target: tuple[str, str] | None, labels: Mapping[str, str],
                      path: Path | None) -> str:
        steps = 1 + (path is not None)
        reporter.set(0, steps, "committing the container")
        repository, tag = target if target is not None else (None, None)
        image_id = await self._backend.commit(container_id, repository=repository, tag=tag,
                                              labels=labels)
        name = f"{repository}:{tag}" if target is not None else image_id
        log.info("committed container %s as %s (%s)", container_id[:12], name, image_id[:19])
        reporter.set(1, steps, f"committed {name}")
        if path is None:
            return f"committed {name}"
        try:
            written = await self._export(image_id if target is None else name, path)
        finally:
            if target is None:  # the untagged snapshot existed only to be exported
                try:
                    await self._backend.image_remove(image_id, force=True)
                except BerthError as exc:
                    log.warning("could not remove the exported snapshot %s: %s", image_id, exc)
        reporter.set(steps, steps, f"exported {name} to {path}")
        log.info("exported %s to %s (%d bytes)", name, path, written)
        return f"exported {name} to {path}"

    async def _export(self, ref: str, path: Path) -> int:
        path.parent.mkdir(parents=True, exist_ok=True, mode=0o750)
        tmp = path.with_name(f".{path.name}.{os.urandom(4).hex()}.part")
        gzip = zlib.compressobj(6, zlib.DEFLATED, 31) if path.name.endswith(".gz") else None
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o640)
        written = 0
        try:
            with os.fdopen(fd, "wb") as out:
                async for chunk in self._backend.image_export(ref):
                    data = gzip.compress(chunk) if gzip is not None else chunk
                    written += await asyncio.to_thread(out.write, data)
                if gzip is not None:
                    written += out.write(gzip.flush())
                out.flush()
                os.fsync(out.fileno())
            os.replace(tmp, path)
        except BaseException:
            tmp.unlink(missing_ok=True)
            raise
        return written

    def start_push(self, image_ref: Any, registry: Mapping[str, Any] | None) -> str:
        ref, is_local = ref_of(image_ref)
        auth = push_auth(registry, ref)

        async def job(reporter: ProgressReporter) -> str:
            if is_local:
                return f"{ref} is a local image; nothing to push"
            async with asyncio.timeout(self._push_timeout):
                return await self._push(reporter, ref, auth)

        return self._tasks.start(job, name=f"push {ref}")

    async def _push(self, reporter: ProgressReporter, ref: str,
                    auth: Mapping[str, str] | None) -> str:
        if await self._backend.image_inspect(ref) is None:
            raise ImageNotAvailable(f"image {ref} is not on this node", image=ref)
        progress = push_progress()
        try:
            async for event in self._backend.image_push(ref, auth):
                if progress.feed(event):
                    reporter.set(progress.current, progress.total)
        except ImagePushFailed:
            raise
        except BerthError as exc:
            raise ImagePushFailed(f"push of {ref} failed: {exc}", image=ref) from exc
        log.info("pushed %s", ref)
        return f"pushed {ref}"
