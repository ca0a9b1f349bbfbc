"""An in-memory container engine that behaves like :class:`~berth.backend.docker.DockerBackend`.

For unit tests and plugin authors: containers, images and an event stream live in dicts, and
every verb answers the way the Docker seam does after its error translation (unknown id →
``ContainerNotFound``, duplicate name → ``ContainerConflict``, exec in a stopped container →
``ContainerConflict``, missing image on create → ``ContainerNotFound``). Standard library only.

Test helpers: :meth:`FakeBackend.kill` makes a container die by itself, :meth:`add_image` and
:meth:`add_remote` stock the local store and the "registry", :meth:`fail_next` injects one
failure into the next call of a verb, :meth:`hold` keeps the next reply of a verb back until
the test releases it, :meth:`inject_faults` makes random calls fail the ways a real engine does
(see :class:`Faults`), and :attr:`FakeBackend.calls` records every call as ``(verb, target)``.

Fidelity notes: ``stop`` of a running container ends it with ``stop_exit_code`` (143, SIGTERM
under ``Init``) and is a no-op on a stopped one (Docker's 304); ``remove`` is ``force=True`` as in
the real seam, so a running container dies with 137 first (``kill_and_remove`` likewise, returning
the exit code and, when asked, the log's tail); ``host_ports`` is empty while a
container is not running, as in ``NetworkSettings.Ports``; events carry only ``ai.backend.*``
labels, as the real seam keeps. Networks: a container whose ``HostConfig.NetworkMode`` names a
user network joins it (with ``NetworkingConfig`` aliases) and leaves it on removal; creating a
taken name is a ``ContainerConflict``, removing a network with members a 403 ``BackendError``.
``commit`` makes an image of the container's labels over its image's; ``image_push`` needs the
image locally and, for a registry host in :attr:`FakeBackend.registry_auth`, those credentials;
a pushed image becomes pullable.
"""

from __future__ import annotations

import asyncio
import builtins
import hashlib
import itertools
import random
import time
from collections import deque
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any, TypeVar

from berth.backend.base import (
    ContainerEvent,
    ContainerInfo,
    ExecResult,
    ImageInfo,
    NetworkInfo,
    RemovedContainer,
)
from berth.errors import BackendError, ContainerConflict, ContainerNotFound, ImageNotAvailable

__all__ = ["FAULT_KINDS", "ExecHandler", "FakeBackend", "FakeContainer", "Faults", "RemoteImage"]

ExecHandler = Callable[["FakeContainer", Sequence[str], "str | None", Mapping[str, str]],
                       "ExecResult | Awaitable[ExecResult]"]

VERBS = frozenset({
    "ping", "create", "start", "stop", "remove", "kill_and_remove", "inspect", "list", "logs", "exec", "events",
    "image_inspect", "image_list", "image_remove", "image_pull", "image_push", "image_export",
    "commit", "network_create", "network_inspect", "network_list", "network_remove",
})
FAULT_KINDS = ("error", "timeout", "lost", "hang")
_BUILTIN_NETWORKS = frozenset({"", "default", "bridge", "host", "none"})
_EVENT_LABEL_PREFIX = "ai.backend."
T = TypeVar("T")


@dataclass
class FakeContainer:
    """One container's mutable state; tests may read it and set ``stop_exit_code``."""

    id: str
    name: str
    config: dict[str, Any]
    labels: dict[str, str]
    image: str
    port_bindings: dict[int, int]
    status: str = "created"
    exit_code: int = 0
    oom_killed: bool = False
    pid: int = 0
    started_at: str = "0001-01-01T00:00:00Z"
    finished_at: str = "0001-01-01T00:00:00Z"
    stop_exit_code: int = 143
    log: str = ""
    networks: dict[str, list[str]] = field(default_factory=dict)  # network id → aliases

    @property
    def running(self) -> bool:
        return self.status == "running"

    def info(self) -> ContainerInfo:
        return ContainerInfo(
            id=self.id, name=self.name, labels=dict(self.labels), running=self.running,
            status=self.status, exit_code=self.exit_code, oom_killed=self.oom_killed,
            pid=self.pid, image=self.image, started_at=self.started_at,
            finished_at=self.finished_at,
            host_ports=dict(self.port_bindings) if self.running else {},
        )


@dataclass
class FakeNetwork:
    id: str
    name: str
    labels: dict[str, str]
    driver: str = "bridge"

    def info(self, members: Sequence[str]) -> NetworkInfo:
        return NetworkInfo(id=self.id, name=self.name, labels=dict(self.labels),
                           driver=self.driver, containers=tuple(members))


@dataclass
class RemoteImage:
    """An image the fake registry serves to :meth:`FakeBackend.image_pull`."""

    info: ImageInfo
    layers: int = 2
    layer_size: int = 1 << 20
    auth: Mapping[str, str] | None = None  # credentials the registry insists on


@dataclass
class Faults:
    """Random engine faults: each call of a verb in ``verbs`` fails with probability ``rate``,
    in one of ``kinds`` drawn from ``rng`` (seeded by the test, so a failure replays):

    ``error``   a 500 from the engine before anything changed (BackendError, status 500);
    ``timeout`` the request timed out before anything changed (BackendError, no status);
    ``lost``    the engine did the work but the reply was lost (BackendError after the change:
                a container created, started or removed all the same);
    ``hang``    the call hangs ``hang_seconds`` before anything changes, then times out as the
                seam's HTTP client would.

    ``injected`` records ``(verb, target, kind)`` for every fault.
    """

    rng: random.Random
    rate: float
    kinds: tuple[str, ...] = FAULT_KINDS
    verbs: frozenset[str] = VERBS
    hang_seconds: float = 300.0
    injected: list[tuple[str, str, str]] = field(default_factory=list)

    def __post_init__(self) -> None:
        if unknown := set(self.kinds) - set(FAULT_KINDS):
            raise ValueError(f"unknown fault kinds {sorted(unknown)}; one of {FAULT_KINDS}")
        for verb in self.verbs:
            _check_verb(verb)

    def draw(self, verb: str, target: str) -> str | None:
        if verb not in self.verbs or self.rng.random() >= self.rate:
            return None
        kind = self.rng.choice(self.kinds)
        self.injected.append((verb, target, kind))
        return kind


@dataclass
class _Hold:
    reached: asyncio.Event = field(default_factory=asyncio.Event)
    released: asyncio.Event = field(default_factory=asyncio.Event)

    def release(self) -> None:
        self.released.set()


class _EventStream:
    """Subscribed from the moment :meth:`FakeBackend.events` is called, not from first ``anext``."""

    def __init__(self, backend: FakeBackend, labels: Mapping[str, str]) -> None:
        self._backend = backend
        self.labels = dict(labels)
        self.queue: asyncio.Queue[ContainerEvent | None] = asyncio.Queue()
        self._first = True
        backend._subscribers.append(self)

    def __aiter__(self) -> _EventStream:
        return self

    async def __anext__(self) -> ContainerEvent:
        if self._first:
            self._first = False
            await self._backend._enter("events", "")
        event = await self.queue.get()
        if event is None:
            await self.aclose()
            raise StopAsyncIteration
        return event

    async def aclose(self) -> None:
        if self in self._backend._subscribers:
            self._backend._subscribers.remove(self)


def _now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S.000000000Z", time.gmtime())


def _hex_id(seed: str) -> str:
    return hashlib.sha256(seed.encode()).hexdigest()


def normalise_ref(ref: str) -> str:
    """``busybox`` → ``busybox:latest``; tagged and digest references stay as they are."""
    if "@" in ref or ref.startswith("sha256:"):
        return ref
    last = ref.rsplit("/", 1)[-1]
    return ref if ":" in last else f"{ref}:latest"


def _matches(labels: Mapping[str, str], wanted: Mapping[str, str]) -> bool:
    return all(labels.get(k) == v for k, v in wanted.items())


def _bindings(config: Mapping[str, Any], next_ephemeral: Callable[[], int]) -> dict[int, int]:
    raw = (config.get("HostConfig") or {}).get("PortBindings") or {}
    ports: dict[int, int] = {}
    for key, bindings in raw.items():
        for binding in bindings or []:
            host = str(binding.get("HostPort") or "")
            ports[int(str(key).split("/")[0])] = int(host) if host else next_ephemeral()
            break
    return ports


class FakeBackend:
    """A faithful in-memory :class:`~berth.backend.base.ContainerBackend`."""

    def __init__(self, *, exec_handler: ExecHandler | None = None) -> None:
        self.containers: dict[str, FakeContainer] = {}
        self.images: dict[str, ImageInfo] = {}  # image id → info (tags live in the info)
        self.remote: dict[str, RemoteImage] = {}  # normalised ref → what a pull brings
        self.pulls: list[tuple[str, Mapping[str, str] | None]] = []
        self.pushes: list[tuple[str, Mapping[str, str] | None]] = []
        self.networks: dict[str, FakeNetwork] = {}  # network id → network
        self.registry_auth: dict[str, Mapping[str, str]] = {}  # registry host → credentials
        self.calls: list[tuple[str, str]] = []
        self.exec_handler: ExecHandler = exec_handler or _no_such_command
        self.closed = False
        self._subscribers: list[_EventStream] = []
        self._failures: dict[str, deque[BaseException]] = {}
        self._holds: dict[str, deque[_Hold]] = {}
        self.faults: Faults | None = None
        self._lost: set[tuple[int, str]] = set()  # (task, verb) whose reply is to be lost
        self._serial = itertools.count(1)
        self._pids = itertools.count(10_000)
        self._ephemeral = itertools.count(49_153)

    # ------------------------------------------------------------------ test helpers
    def fail_next(self, verb: str, exc: BaseException) -> None:
        """The next call of ``verb`` raises ``exc`` before it changes anything."""
        self._failures.setdefault(_check_verb(verb), deque()).append(exc)

    def inject_faults(self, rng: random.Random, rate: float, *,
                      kinds: Sequence[str] = FAULT_KINDS, verbs: Sequence[str] | None = None,
                      hang_seconds: float = 300.0) -> Faults:
        """From now on, random calls fail (see :class:`Faults`); :meth:`heal` stops it."""
        self.faults = Faults(rng, rate, tuple(kinds),
                             frozenset(verbs) if verbs is not None else VERBS, hang_seconds)
        return self.faults

    def heal(self) -> None:
        """No more injected faults (the ones already hanging finish their hang)."""
        self.faults = None

    def hold(self, verb: str) -> _Hold:
        """The next call of ``verb`` does its work, sets ``reached``, then waits for ``release()``."""
        gate = _Hold()
        self._holds.setdefault(_check_verb(verb), deque()).append(gate)
        return gate

    def add_image(self, ref: str, *, labels: Mapping[str, str] | None = None,
                  image_id: str | None = None, digests: Sequence[str] = (),
                  architecture: str = "amd64", size: int = 0) -> ImageInfo:
        """Put an image in the local store under ``ref`` (moving the tag if another has it)."""
        tag = normalise_ref(ref)
        image_id = image_id or f"sha256:{_hex_id('image:' + tag)}"
        old = self.images.get(image_id)
        tags = tuple(t for t in (old.tags if old else ()) if t != tag) + (tag,)
        info = ImageInfo(id=image_id, tags=tags, labels=dict(labels or {}),
                         digests=tuple(digests) or (old.digests if old else ()),
                         architecture=architecture, size=size)
        self._untag(tag)
        self.images[image_id] = info
        return info

    def add_remote(self, ref: str, *, labels: Mapping[str, str] | None = None,
                   image_id: str | None = None, layers: int = 2, layer_size: int = 1 << 20,
                   auth: Mapping[str, str] | None = None) -> RemoteImage:
        """Make ``ref`` pullable; the pulled image gets a repo digest ``name@sha256:…``."""
        tag = normalise_ref(ref)
        image_id = image_id or f"sha256:{_hex_id('remote:' + tag)}"
        digest = f"{tag.rsplit(':', 1)[0]}@sha256:{_hex_id('digest:' + image_id)}"
        info = ImageInfo(id=image_id, tags=(tag,), labels=dict(labels or {}), digests=(digest,),
                         architecture="amd64", size=layers * layer_size)
        remote = RemoteImage(info, layers, layer_size, auth)
        self.remote[tag] = remote
        return remote

    def kill(self, container_id: str, exit_code: int = 137, *, oom: bool = False) -> None:
        """The container's process ended by itself (crash, OOM kill, exit)."""
        container = self._get(container_id)
        if not container.running:
            raise ContainerConflict(f"container {container.id[:12]} is not running", status=409)
        if oom:
            self._publish("oom", container)
        self._end(container, exit_code, oom=oom)

    def write_log(self, container_id: str, text: str) -> None:
        self._get(container_id).log += text

    def running_ids(self) -> set[str]:
        return {c.id for c in self.containers.values() if c.running}

    # ------------------------------------------------------------------ lifecycle
    async def close(self) -> None:
        self.closed = True
        for stream in list(self._subscribers):
            stream.queue.put_nowait(None)

    async def root_dir(self) -> str | None:
        return None  # no engine, no data root of its own

    async def ping(self) -> bool:
        try:
            await self._enter("ping", "")
        except BackendError:  # the seam's ping answers False for any failure
            return False
        return not self.closed

    async def create(self, name: str, config: Mapping[str, Any]) -> str:
        await self._enter("create", name)
        if any(c.name == name for c in self.containers.values()):
            raise ContainerConflict(f"create {name}: Conflict. The container name \"/{name}\" "
                                    "is already in use", status=409)
        image_ref = str(config.get("Image") or "")
        if self._find_image(image_ref) is None:
            raise ContainerNotFound(f"create {name}: No such image: {image_ref}", status=404)
        mode = str((config.get("HostConfig") or {}).get("NetworkMode") or "")
        networks: dict[str, list[str]] = {}
        if mode not in _BUILTIN_NETWORKS and not mode.startswith("container:"):
            network = self._find_network(mode)
            if network is None:
                raise ContainerNotFound(f"create {name}: network {mode} not found", status=404)
            endpoints = (config.get("NetworkingConfig") or {}).get("EndpointsConfig") or {}
            networks[network.id] = list((endpoints.get(mode) or {}).get("Aliases") or [])
        container = FakeContainer(
            id=_hex_id(f"container:{name}:{next(self._serial)}"), name=name,
            config=dict(config), labels=dict(config.get("Labels") or {}), image=image_ref,
            port_bindings=_bindings(config, lambda: next(self._ephemeral)), networks=networks)
        self.containers[container.id] = container
        return await self._leave("create", container.id)

    async def start(self, container_id: str) -> None:
        await self._enter("start", container_id)
        container = self._get(container_id)
        if not container.running:
            container.status, container.exit_code, container.oom_killed = "running", 0, False
            container.pid, container.started_at = next(self._pids), _now()
            self._publish("start", container)
        await self._leave("start", None)

    async def stop(self, container_id: str, *, grace: float) -> None:
        await self._enter("stop", container_id)
        container = self._get(container_id)
        if container.running:
            self._end(container, container.stop_exit_code)
        await self._leave("stop", None)

    async def remove(self, container_id: str) -> None:
        await self._enter("remove", container_id)
        container = self._get(container_id)
        if container.running:
            self._end(container, 137)
        del self.containers[container.id]
        self._publish("destroy", container)
        await self._leave("remove", None)

    async def kill_and_remove(self, container_id: str, *, logs_tail: int | None = None
                              ) -> RemovedContainer:
        await self._enter("kill_and_remove", container_id)
        container = self._get(container_id)
        if container.running:
            self._end(container, 137)
        logs = _tail(container.log, logs_tail) if logs_tail is not None else None
        del self.containers[container.id]
        self._publish("destroy", container)
        return await self._leave("kill_and_remove", RemovedContainer(container.exit_code, logs))

    async def update(self, container_id: str, resources: Mapping[str, Any]) -> None:
        await self._enter("update", container_id)
        container = self._get(container_id)
        if not container.running:
            raise BackendError(f"update {container_id[:12]}: container is not running",
                               status=409)
        container.config["HostConfig"] = {**(container.config.get("HostConfig") or {}),
                                          **resources}
        await self._leave("update", None)

    async def rename(self, container_id: str, name: str) -> None:
        await self._enter("rename", container_id)
        container = self._get(container_id)
        if any(c.name == name and c is not container for c in self.containers.values()):
            raise ContainerConflict(f"rename {container_id[:12]}: name {name} is in use",
                                    status=409)
        container.name = name
        await self._leave("rename", None)

    async def inspect(self, container_id: str) -> ContainerInfo:
        await self._enter("inspect", container_id)
        return await self._leave("inspect", self._get(container_id).info())

    async def list(self, labels: Mapping[str, str]) -> list[ContainerInfo]:
        await self._enter("list", ",".join(f"{k}={v}" for k, v in labels.items()))
        found = [c.info() for c in self.containers.values() if _matches(c.labels, labels)]
        return await self._leave("list", found)

    async def logs(self, container_id: str, *, tail: int | None = None) -> str:
        await self._enter("logs", container_id)
        text = self._get(container_id).log
        return await self._leave("logs", _tail(text, tail) if tail is not None else text)

    async def exec(self, container_id: str, cmd: Sequence[str], *, user: str | None = None,
                   env: Mapping[str, str] | None = None, timeout: float = 60.0) -> ExecResult:
        await self._enter("exec", container_id)
        container = self._get(container_id)
        if not container.running:
            raise ContainerConflict(f"exec in {container.id[:12]}: Container "
                                    f"{container.id} is not running", status=409)
        try:
            async with asyncio.timeout(timeout):
                result = self.exec_handler(container, list(cmd), user, dict(env or {}))
                if not isinstance(result, ExecResult):
                    result = await result
        except TimeoutError as exc:
            raise BackendError(f"exec in {container.id[:12]}: {exc!r}") from exc
        return await self._leave("exec", result)

    def events(self, labels: Mapping[str, str]) -> AsyncIterator[ContainerEvent]:
        return _EventStream(self, labels)

    # ------------------------------------------------------------------ images
    async def image_inspect(self, ref: str) -> ImageInfo | None:
        await self._enter("image_inspect", ref)
        return await self._leave("image_inspect", self._find_image(ref))

    async def image_list(self) -> builtins.list[ImageInfo]:
        await self._enter("image_list", "")
        return await self._leave("image_list", list(self.images.values()))

    async def image_remove(self, ref: str, *, force: bool = False, noprune: bool = False) -> None:
        await self._enter("image_remove", ref)
        info = self._find_image(ref)
        if info is None:
            raise ImageNotAvailable(f"image {ref} not found", image=ref)
        users = [c for c in self.containers.values() if self._find_image(c.image) == info]
        if users and not force:
            raise ContainerConflict(f"remove image {ref}: image is being used by container "
                                    f"{users[0].id[:12]}", status=409)
        tag = normalise_ref(ref)
        if tag in info.tags and len(info.tags) > 1:
            self.images[info.id] = replace(info, tags=tuple(t for t in info.tags if t != tag))
        else:
            del self.images[info.id]
        await self._leave("image_remove", None)

    async def image_pull(self, ref: str, auth: Mapping[str, str] | None = None
                         ) -> AsyncIterator[dict[str, Any]]:
        await self._enter("image_pull", ref)
        self.pulls.append((ref, dict(auth) if auth else None))
        tag = normalise_ref(ref)
        name, _, version = tag.rpartition(":")
        yield {"status": f"Pulling from {name}", "id": version}
        remote = self.remote.get(tag)
        if remote is None or (remote.auth is not None and dict(remote.auth) != dict(auth or {})):
            message = (f"manifest for {tag} not found: manifest unknown" if remote is None
                       else f"pull access denied for {name}: unauthorized")
            yield {"errorDetail": {"message": message}, "error": message}
            return
        for event in _layer_events(remote):
            await asyncio.sleep(0)
            yield event
        self._store_pulled(tag, remote.info)
        yield {"status": f"Digest: {remote.info.digests[0].split('@', 1)[1]}"}
        yield {"status": f"Status: Downloaded newer image for {tag}"}
        await self._leave("image_pull", None)

    def image_push(self, ref: str, auth: Mapping[str, str] | None = None
                   ) -> AsyncIterator[dict[str, Any]]:
        return self._push(ref, auth)

    async def _push(self, ref: str, auth: Mapping[str, str] | None
                    ) -> AsyncIterator[dict[str, Any]]:
        await self._enter("image_push", ref)
        self.pushes.append((ref, dict(auth) if auth else None))
        tag = normalise_ref(ref)
        info = self._find_image(tag)
        if info is None:
            raise ContainerNotFound(f"push {ref}: An image does not exist locally with the "
                                    f"tag: {tag.rsplit(':', 1)[0]}", status=404)
        yield {"status": f"The push refers to repository [{tag.rsplit(':', 1)[0]}]"}
        wanted = self.registry_auth.get(tag.split("/", 1)[0])
        if wanted is not None and {k: (auth or {}).get(k) for k in ("username", "password")
                                   } != {k: wanted.get(k) for k in ("username", "password")}:
            raise BackendError(f"push {ref}: unauthorized: authentication required")
        remote = RemoteImage(replace(info, tags=(tag,)))
        for event in _layer_events(remote, push=True):
            await asyncio.sleep(0)
            yield event
        digest = f"sha256:{_hex_id('digest:' + info.id)}"
        self.remote[tag] = replace(remote, info=replace(
            remote.info, digests=(f"{tag.rsplit(':', 1)[0]}@{digest}",)))
        yield {"status": f"{tag.rsplit(':', 1)[1]}: digest: {digest} size: 527"}
        await self._leave("image_push", None)

    def image_export(self, ref: str) -> AsyncIterator[bytes]:
        return self._export(ref)

    async def _export(self, ref: str) -> AsyncIterator[bytes]:
        await self._enter("image_export", ref)
        info = self._find_image(ref)
        if info is None:
            raise ImageNotAvailable(f"image {ref} not found", image=ref)
        body = f"fake image tarball of {info.id} ({', '.join(info.tags)})\n".encode() * 64
        for start in range(0, len(body), 1024):
            await asyncio.sleep(0)
            yield body[start:start + 1024]
        await self._leave("image_export", None)

    async def commit(self, container_id: str, *, repository: str | None = None,
                     tag: str | None = None, labels: Mapping[str, str] | None = None,
                     author: str | None = None) -> str:
        await self._enter("commit", container_id)
        container = self._get(container_id)
        base = self._find_image(container.image)
        merged = {**(base.labels if base else {}), **container.labels, **(labels or {})}
        image_id = f"sha256:{_hex_id(f'commit:{container.id}:{next(self._serial)}')}"
        info = ImageInfo(id=image_id, tags=(), labels=merged,
                         architecture=base.architecture if base else "amd64")
        self.images[image_id] = info
        if repository:
            self.add_image(f"{repository}:{tag or 'latest'}", labels=merged, image_id=image_id)
        return await self._leave("commit", image_id)

    # ------------------------------------------------------------------ networks
    async def network_create(self, name: str, *, labels: Mapping[str, str],
                             driver: str = "bridge") -> NetworkInfo:
        await self._enter("network_create", name)
        if name in _BUILTIN_NETWORKS or self._find_network(name) is not None:
            raise ContainerConflict(f"create network {name}: network with name {name} "
                                    "already exists", status=409)
        network = FakeNetwork(_hex_id(f"network:{name}:{next(self._serial)}"), name,
                              dict(labels), driver)
        self.networks[network.id] = network
        return await self._leave("network_create", network.info(()))

    async def network_inspect(self, name: str) -> NetworkInfo | None:
        await self._enter("network_inspect", name)
        network = self._find_network(name)
        info = network.info(self._members(network)) if network else None
        return await self._leave("network_inspect", info)

    async def network_list(self, labels: Mapping[str, str]) -> builtins.list[NetworkInfo]:
        await self._enter("network_list", ",".join(f"{k}={v}" for k, v in labels.items()))
        found = [n.info(self._members(n)) for n in self.networks.values()
                 if _matches(n.labels, labels)]
        return await self._leave("network_list", found)

    async def network_remove(self, name: str) -> None:
        await self._enter("network_remove", name)
        network = self._find_network(name)
        if network is None:
            raise ContainerNotFound(f"remove network {name}: network {name} not found",
                                    status=404)
        if self._members(network):
            raise BackendError(f"remove network {name}: error while removing network: "
                               f"network {name} id {network.id} has active endpoints",
                               status=403)
        del self.networks[network.id]
        await self._leave("network_remove", None)

    def _find_network(self, ref: str) -> FakeNetwork | None:
        if ref in self.networks:
            return self.networks[ref]
        return next((n for n in self.networks.values() if n.name == ref), None)

    def _members(self, network: FakeNetwork) -> builtins.list[str]:
        return [c.id for c in self.containers.values() if network.id in c.networks]

    # ------------------------------------------------------------------ insides
    async def _enter(self, verb: str, target: str) -> None:
        self.calls.append((verb, target))
        failures = self._failures.get(verb)
        if failures:
            raise failures.popleft()
        key = (id(asyncio.current_task()), verb)
        self._lost.discard(key)  # a call that raised before _leave must not lose a later reply
        kind = self.faults.draw(verb, target) if self.faults is not None else None
        if kind == "error":
            raise BackendError(f"{verb} {target[:12]}: 500 Server Error (injected)", status=500)
        if kind == "timeout":
            raise BackendError(f"{verb} {target[:12]}: TimeoutError() (injected)")
        if kind == "hang":
            assert self.faults is not None
            await asyncio.sleep(self.faults.hang_seconds)
            raise BackendError(f"{verb} {target[:12]}: TimeoutError() (injected hang)")
        if kind == "lost":
            self._lost.add(key)

    async def _leave(self, verb: str, result: T) -> T:
        key = (id(asyncio.current_task()), verb)
        if key in self._lost:
            self._lost.discard(key)
            raise BackendError(f"{verb}: TimeoutError() (injected: done, reply lost)")
        holds = self._holds.get(verb)
        if holds:
            gate = holds.popleft()
            gate.reached.set()
            await gate.released.wait()
        return result

    def _get(self, ref: str) -> FakeContainer:
        if ref in self.containers:
            return self.containers[ref]
        for container in self.containers.values():
            if container.name == ref.lstrip("/"):
                return container
        found = [c for c in self.containers.values() if ref and c.id.startswith(ref)]
        if len(found) == 1:
            return found[0]
        raise ContainerNotFound(f"No such container: {ref}", status=404)

    def _find_image(self, ref: str) -> ImageInfo | None:
        if not ref:
            return None
        bare = ref.removeprefix("sha256:")
        for info in self.images.values():
            if info.id == ref or info.id.removeprefix("sha256:") == bare:
                return info
        tag = normalise_ref(ref)
        for info in self.images.values():
            if tag in info.tags or ref in info.digests:
                return info
        return None

    def _untag(self, tag: str) -> None:
        for image_id, info in list(self.images.items()):
            if tag in info.tags:
                self.images[image_id] = replace(info, tags=tuple(t for t in info.tags if t != tag))

    def _store_pulled(self, tag: str, info: ImageInfo) -> None:
        self._untag(tag)
        old = self.images.get(info.id)
        tags = tuple(t for t in (old.tags if old else ()) if t != tag) + (tag,)
        self.images[info.id] = replace(info, tags=tags)

    def _end(self, container: FakeContainer, exit_code: int, *, oom: bool = False) -> None:
        container.status, container.exit_code, container.oom_killed = "exited", exit_code, oom
        container.pid, container.finished_at = 0, _now()
        self._publish("die", container)

    def _publish(self, action: str, container: FakeContainer) -> None:
        event = ContainerEvent(
            action=action, container_id=container.id,
            labels={k: v for k, v in container.labels.items()
                    if k.startswith(_EVENT_LABEL_PREFIX)},
            exit_code=container.exit_code if action == "die" else None,
        )
        for stream in self._subscribers:
            if _matches(container.labels, stream.labels):
                stream.queue.put_nowait(event)


def _tail(text: str, lines: int) -> str:
    return "".join(text.splitlines(keepends=True)[-lines:] if lines > 0 else [])


def _check_verb(verb: str) -> str:
    if verb not in VERBS:
        raise ValueError(f"unknown backend verb {verb!r}; one of {sorted(VERBS)}")
    return verb


def _no_such_command(container: FakeContainer, cmd: Sequence[str], user: str | None,
                     env: Mapping[str, str]) -> ExecResult:
    name = cmd[0] if cmd else ""
    return ExecResult(127, b"", f"exec: {name!r}: not found (no exec handler set)\n".encode())


def _layer_events(remote: RemoteImage, *, push: bool = False) -> list[dict[str, Any]]:
    events: list[dict[str, Any]] = []
    total = remote.layer_size
    for n in range(remote.layers):
        layer = f"{_hex_id(f'{remote.info.id}:{n}')[:12]}"
        if push:
            events += [
                {"status": "Preparing", "progressDetail": {}, "id": layer},
                {"status": "Pushing", "progressDetail": {"current": total // 2, "total": total},
                 "id": layer},
                {"status": "Pushing", "progressDetail": {"current": total, "total": total},
                 "id": layer},
                {"status": "Pushed", "progressDetail": {}, "id": layer},
            ]
            continue
        events += [
            {"status": "Pulling fs layer", "progressDetail": {}, "id": layer},
            {"status": "Downloading", "progressDetail": {"current": total // 2, "total": total},
             "id": layer},
            {"status": "Downloading", "progressDetail": {"current": total, "total": total},
             "id": layer},
            {"status": "Download complete", "progressDetail": {}, "id": layer},
            {"status": "Pull complete", "progressDetail": {}, "id": layer},
        ]
    return events
