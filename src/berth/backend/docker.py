"""Docker Engine backend over aiodocker: the only module that imports it.

Domain verbs over one choke point, :func:`_translate`, which maps ``DockerError`` statuses to
Berth's errors (404 → ContainerNotFound, 409 → ContainerConflict, anything else → BackendError).
"""

from __future__ import annotations

import asyncio
import builtins
import json
import logging
import re
from collections.abc import AsyncIterator, Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any, BinaryIO

import aiodocker
import aiohttp
from aiodocker.exceptions import DockerError

from berth.backend.base import (
    ContainerEvent,
    ContainerInfo,
    ExecResult,
    ImageInfo,
    NetworkInfo,
    RemovedContainer,
)
from berth.backend.jsonlog import tail_text
from berth.errors import BackendError, ContainerConflict, ContainerNotFound, ImageNotAvailable

__all__ = ["DockerBackend"]

log = logging.getLogger(__name__)

_CONTAINER_ID = re.compile(r"[0-9a-f]{64}")


@contextmanager
def _translate(what: str) -> Iterator[None]:
    try:
        yield
    except DockerError as exc:
        message = f"{what}: {exc.message}"
        if exc.status == 404:
            raise ContainerNotFound(message, status=404) from exc
        if exc.status == 409:
            raise ContainerConflict(message, status=409) from exc
        raise BackendError(message, status=exc.status) from exc
    except (TimeoutError, OSError, aiohttp.ClientError) as exc:  # the engine is gone or hung
        raise BackendError(f"{what}: {exc!r}") from exc


def _info(data: Mapping[str, Any]) -> ContainerInfo:
    state = data.get("State", {})
    config = data.get("Config", {})
    ports: dict[int, int] = {}
    for key, bindings in (data.get("NetworkSettings", {}).get("Ports") or {}).items():
        for binding in bindings or []:
            ports[int(key.split("/")[0])] = int(binding["HostPort"])
            break
    return ContainerInfo(
        id=data["Id"],
        name=data.get("Name", "").lstrip("/"),
        labels=config.get("Labels") or {},
        running=bool(state.get("Running")),
        status=state.get("Status", ""),
        exit_code=state.get("ExitCode"),
        oom_killed=bool(state.get("OOMKilled")),
        pid=int(state.get("Pid") or 0),
        image=config.get("Image", ""),
        started_at=state.get("StartedAt", ""),
        finished_at=state.get("FinishedAt", ""),
        host_ports=ports,
    )


async def _wait_status(waiting: aiohttp.ClientResponse) -> int | None:
    """The exit code in a finished ``wait``'s answer; None when the engine did not say."""
    try:
        async with asyncio.timeout(5.0):
            data = await waiting.json(content_type=None)
        code = data.get("StatusCode")
        return int(code) if code is not None else None
    except (TimeoutError, ValueError, TypeError, AttributeError, aiohttp.ClientError) as exc:
        log.debug("no exit code in the wait answer: %r", exc)
        return None


def _image(data: Mapping[str, Any]) -> ImageInfo:
    return ImageInfo(
        id=data["Id"],
        tags=tuple(data.get("RepoTags") or ()),
        labels=(data.get("Config") or {}).get("Labels") or data.get("Labels") or {},
        digests=tuple(data.get("RepoDigests") or ()),
        architecture=data.get("Architecture", ""),
        size=int(data.get("Size") or 0),
    )


def _network(data: Mapping[str, Any]) -> NetworkInfo:
    return NetworkInfo(
        id=data["Id"], name=data.get("Name", ""), labels=data.get("Labels") or {},
        driver=data.get("Driver", ""), containers=tuple(data.get("Containers") or {}),
    )


def _split_ref(ref: str) -> tuple[str, str | None]:
    """``repo:tag`` → (repo, tag); a registry port is not a tag."""
    repo, sep, tag = ref.rpartition(":")
    if not sep or "/" in tag:
        return ref, None
    return repo, tag


def label_changes(labels: Mapping[str, str]) -> list[str]:
    """Dockerfile ``LABEL`` lines for a commit, quoted so that spaces, quotes and ``$`` (which
    the engine would substitute) stay literal."""
    def quote(text: str) -> str:
        return '"' + text.replace("\\", "\\\\").replace('"', '\\"').replace("$", "\\$") + '"'
    return [f"LABEL {quote(k)}={quote(v)}" for k, v in labels.items()]


class DockerBackend:
    def __init__(self, url: str | None = None) -> None:
        self._docker = aiodocker.Docker(url=url)
        self._root: str | None = None  # the engine's data root, asked once

    async def close(self) -> None:
        await self._docker.close()

    async def ping(self) -> bool:
        try:
            await self._docker.version()
            return True
        except (TimeoutError, DockerError, OSError, aiohttp.ClientError):
            return False

    async def root_dir(self) -> str:
        """The engine's data root (``DockerRootDir``): where container writes land."""
        with _translate("info"):
            if self._root is None:
                info = await self._docker.system.info()
                self._root = str(info.get("DockerRootDir") or "/var/lib/docker")
            return self._root

    # create, start and inspect (a kernel's hot path, and every reconcile) query the engine
    # directly: aiodocker's DockerContainer and its DockerLog refer to each other, so each one
    # made — holding the whole inspect answer after `show()` — lives until a full garbage
    # collection, which a busy agent runs seldom (~20 KB a kernel at 500 kernels).
    async def create(self, name: str, config: Mapping[str, Any]) -> str:
        with _translate(f"create {name}"):
            data = await self._docker._query_json(
                "containers/create", method="POST", params={"name": name},
                data=json.dumps(dict(config)).encode())
            return str(data["Id"])

    async def start(self, container_id: str) -> None:
        with _translate(f"start {container_id[:12]}"):
            async with self._docker._query(f"containers/{container_id}/start", method="POST"):
                pass

    async def stop(self, container_id: str, *, grace: float) -> None:
        with _translate(f"stop {container_id[:12]}"):
            try:
                await self._docker.containers.container(container_id).stop(t=int(grace))
            except DockerError as exc:
                if exc.status != 304:  # already stopped
                    raise

    async def remove(self, container_id: str) -> None:
        with _translate(f"remove {container_id[:12]}"):
            await self._docker.containers.container(container_id).delete(force=True, v=True)

    async def kill_and_remove(self, container_id: str, *, logs_tail: int | None = None
                              ) -> RemovedContainer:
        """``DELETE /containers/{id}?force=1`` (what ``docker rm -f`` sends), with a
        ``wait?condition=removed`` registered just before: the engine answers it with the exit
        code as the removal ends, so no request follows the removal. The json-file log is
        opened before the removal and read after it (an open file outlives its directory);
        where it is not on this host (another log driver, a remote engine) the output costs a
        ``logs`` request first."""
        files = await self._open_json_logs(container_id) if logs_tail is not None else []
        try:
            logs = None
            if logs_tail is not None and not files:
                logs = await self.logs(container_id, tail=logs_tail)
            with _translate(f"remove {container_id[:12]}"):
                async with self._docker._query(
                        f"containers/{container_id}/wait", method="POST",
                        params={"condition": "removed"}, timeout=None) as waiting:
                    # the engine sends the headers once the wait is registered
                    await self._docker.containers.container(container_id).delete(force=True,
                                                                                 v=True)
                    exit_code = await _wait_status(waiting)
            if files:
                assert logs_tail is not None
                logs = await asyncio.to_thread(tail_text, files, logs_tail)
            return RemovedContainer(exit_code, logs)
        finally:
            for file in files:
                file.close()

    async def _open_json_logs(self, container_id: str) -> list[BinaryIO]:
        """The container's json-file logs on this host, newest first, open; [] where there
        are none (another log driver, an engine on another host)."""
        if not _CONTAINER_ID.fullmatch(container_id):
            return []
        try:
            root = await self.root_dir()  # asked of the engine once, then known
        except BackendError:
            return []
        base = Path(root, "containers", container_id, f"{container_id}-json.log")
        files: list[BinaryIO] = []
        for path in (base, base.with_name(f"{base.name}.1")):
            try:
                files.append(path.open("rb"))
            except OSError:
                break  # no log here at all, or no rotated one
        return files

    async def update(self, container_id: str, resources: Mapping[str, Any]) -> None:
        with _translate(f"update {container_id[:12]}"):
            await self._docker._query_json(f"containers/{container_id}/update", method="POST",
                                           data=dict(resources))

    async def rename(self, container_id: str, name: str) -> None:
        with _translate(f"rename {container_id[:12]}"):
            await self._docker.containers.container(container_id).rename(name)

    async def inspect(self, container_id: str) -> ContainerInfo:
        with _translate(f"inspect {container_id[:12]}"):
            return _info(await self._docker._query_json(f"containers/{container_id}/json"))

    async def list(self, labels: Mapping[str, str]) -> builtins.list[ContainerInfo]:
        filters = {"label": [f"{k}={v}" for k, v in labels.items()]}
        with _translate("list containers"):
            found = await self._docker._query_json(
                "containers/json", params={"all": "1", "filters": json.dumps(filters)})
            infos = []
            for c in found:
                try:
                    infos.append(_info(await self._docker._query_json(
                        f"containers/{c['Id']}/json")))
                except DockerError as exc:
                    if exc.status != 404:  # removed between list and show
                        raise
            return infos

    async def logs(self, container_id: str, *, tail: int | None = None) -> str:
        params: dict[str, Any] = {"stdout": True, "stderr": True}
        if tail is not None:
            params["tail"] = tail
        with _translate(f"logs {container_id[:12]}"):
            lines = await self._docker.containers.container(container_id).log(**params)
            return "".join(lines)

    async def exec(self, container_id: str, cmd: Sequence[str], *, user: str | None = None,
                   env: Mapping[str, str] | None = None, timeout: float = 60.0) -> ExecResult:
        with _translate(f"exec in {container_id[:12]}"):
            container = self._docker.containers.container(container_id)
            execution = await container.exec(
                list(cmd), user=user or "", environment=dict(env or {}), stdout=True, stderr=True,
            )
            out, err = bytearray(), bytearray()
            async with asyncio.timeout(timeout):
                async with execution.start(detach=False) as stream:
                    while (msg := await stream.read_out()) is not None:
                        (out if msg.stream == 1 else err).extend(msg.data)
            info = await execution.inspect()
            return ExecResult(int(info.get("ExitCode") or 0), bytes(out), bytes(err))

    async def events(self, labels: Mapping[str, str]) -> AsyncIterator[ContainerEvent]:
        filters = {"type": ["container"], "event": ["start", "die", "oom", "destroy"],
                   "label": [f"{k}={v}" for k, v in labels.items()]}
        with _translate("events"):
            subscriber = self._docker.events.subscribe(filters=filters)  # type: ignore[no-untyped-call]
            try:
                while (event := await subscriber.get()) is not None:
                    attrs = event.get("Actor", {}).get("Attributes", {})
                    code = attrs.get("exitCode")
                    yield ContainerEvent(
                        action=event.get("Action", ""),
                        container_id=event.get("Actor", {}).get("ID", event.get("id", "")),
                        labels={k: v for k, v in attrs.items() if k.startswith("ai.backend.")},
                        exit_code=int(code) if code is not None else None,
                    )
            finally:
                await self._docker.events.stop()  # type: ignore[no-untyped-call]

    async def image_inspect(self, ref: str) -> ImageInfo | None:
        try:
            with _translate(f"inspect image {ref}"):
                return _image(await self._docker.images.inspect(ref))
        except ContainerNotFound:
            return None

    async def image_list(self) -> builtins.list[ImageInfo]:
        with _translate("list images"):
            return [_image(i) for i in await self._docker.images.list()]

    async def image_remove(self, ref: str, *, force: bool = False, noprune: bool = False) -> None:
        try:
            with _translate(f"remove image {ref}"):
                await self._docker.images.delete(ref, force=force, noprune=noprune)
        except ContainerNotFound as exc:
            raise ImageNotAvailable(f"image {ref} not found", image=ref) from exc

    async def image_pull(self, ref: str, auth: Mapping[str, str] | None = None
                         ) -> AsyncIterator[dict[str, Any]]:
        try:
            with _translate(f"pull {ref}"):
                async for event in self._docker.images.pull(
                    ref, auth=dict(auth) if auth else None, stream=True,
                ):
                    yield event
        except ContainerNotFound as exc:
            raise ImageNotAvailable(f"image {ref} not found in its registry", image=ref) from exc

    async def image_push(self, ref: str, auth: Mapping[str, str] | None = None
                         ) -> AsyncIterator[dict[str, Any]]:
        repo, tag = _split_ref(ref)
        with _translate(f"push {ref}"):
            async for event in self._docker.images.push(
                repo, tag=tag, auth=dict(auth) if auth else None, stream=True,
            ):
                yield event

    async def image_export(self, ref: str) -> AsyncIterator[bytes]:
        try:
            with _translate(f"export {ref}"):
                async with self._docker.images.export_image(ref) as stream:
                    while chunk := await stream.read(1 << 20):
                        yield bytes(chunk)
        except ContainerNotFound as exc:
            raise ImageNotAvailable(f"image {ref} not found", image=ref) from exc

    async def commit(self, container_id: str, *, repository: str | None = None,
                     tag: str | None = None, labels: Mapping[str, str] | None = None,
                     author: str | None = None) -> str:
        with _translate(f"commit {container_id[:12]}"):
            result = await self._docker.containers.container(container_id).commit(
                repository=repository, tag=tag, author=author,
                changes=label_changes(labels) if labels else None, pause=True)
            return str(result["Id"])

    async def network_create(self, name: str, *, labels: Mapping[str, str],
                             driver: str = "bridge") -> NetworkInfo:
        with _translate(f"create network {name}"):
            network = await self._docker.networks.create({
                "Name": name, "Driver": driver, "CheckDuplicate": True, "Labels": dict(labels),
            })
            return _network(await network.show())

    async def network_inspect(self, name: str) -> NetworkInfo | None:
        try:
            with _translate(f"inspect network {name}"):
                network = await self._docker.networks.get(name)
                return _network(await network.show())
        except ContainerNotFound:
            return None

    async def network_list(self, labels: Mapping[str, str]) -> builtins.list[NetworkInfo]:
        filters = {"label": [f"{k}={v}" for k, v in labels.items()]}
        found = []
        with _translate("list networks"):
            for data in await self._docker.networks.list(filters=filters):
                try:  # the listing leaves out the attached containers
                    found.append(_network(await self._show_network(data["Id"])))
                except DockerError as exc:
                    if exc.status != 404:  # removed between list and inspect
                        raise
        return found

    async def _show_network(self, network_id: str) -> dict[str, Any]:
        network = await self._docker.networks.get(network_id)
        return await network.show()

    async def network_remove(self, name: str) -> None:
        with _translate(f"remove network {name}"):
            network = await self._docker.networks.get(name)
            await network.delete()
