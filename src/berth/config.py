"""Typed agent configuration (`agent.toml`), validated once and frozen.

Precedence, highest first: command-line flags > ``BACKEND_*`` environment variables > the TOML
file > etcd > the defaults written here; except that, as in Backend.AI, etcd's ``config/agent``
sections (api, container-logs, kernel-lifecycles) and ``config/container`` kernel-uid/gid override
the file (applied at agent start with :func:`berth.events.etcd.apply_etcd_overrides`).
Keys are kebab-case as in Backend.AI's ``agent.toml``; snake_case spellings are accepted too.
Unknown keys are refused with their full key path, so a typo never silently falls back to a
default. The file is found as Backend.AI finds it: ``-f PATH``, else ``BACKEND_CONFIG_FILE``, else
the first existing of ``./agent.toml``, ``~/.config/backend.ai/agent.toml``,
``/etc/backend.ai/agent.toml``; with none, the defaults alone apply.
"""

from __future__ import annotations

import os
import socket
import tomllib
from collections.abc import Mapping
from decimal import Decimal
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from berth.errors import ConfigError
from berth.units import parse_binary_size

__all__ = [
    "AgentConfig",
    "find_config_file",
    "load_config",
    "parse_binary_size",
    "parse_host_port",
]

def parse_host_port(value: str, *, default_port: int | None = None) -> tuple[str, int]:
    """``"0.0.0.0:6011"`` → ``("0.0.0.0", 6011)``; ``"[::1]:6011"`` works too."""
    text = value.strip()
    text = text.removeprefix("tcp://")
    host, sep, port = text.rpartition(":")
    if not sep:
        if default_port is None:
            raise ValueError(f"expected host:port, got {value!r}")
        host, port = text, str(default_port)
    host = host.strip("[]")
    if not host:
        raise ValueError(f"missing host in {value!r}")
    try:
        number = int(port)
    except ValueError as exc:
        raise ValueError(f"bad port in {value!r}") from exc
    if not 0 <= number < 65536:  # 0: let the OS pick (tests)
        raise ValueError(f"port out of range in {value!r}")
    return host, number


def checked_addr(value: str, default_port: int | None = None) -> str:
    """``value`` if it is a usable ``host:port`` (the port may default): the host a name or
    an address that resolving can take (not 1 MB of text, not a label over 63 characters)."""
    host, _ = parse_host_port(value, default_port=default_port)
    try:
        host.encode("idna")
    except UnicodeError as exc:
        raise ValueError(f"not a host name or address: {host[:80]!r}") from exc
    return value


MAX_ID = 2**32 - 2  # the largest uid/gid Linux accepts ((uid_t)-1 means "no change")

# Variables a kernel spec may not set (fnmatch patterns, case-sensitive): the dynamic loader's
# knobs (LD_PRELOAD, LD_AUDIT, LD_LIBRARY_PATH, ...) and glibc's other code-loading ones, which
# would run code inside the agent's runner and every process the agent starts in the kernel;
# and the device-selection variables that container runtimes' host-side hooks read from the
# container's env (NVIDIA_VISIBLE_DEVICES=all would hand the kernel every GPU on the node).
DEFAULT_ENVIRON_DENY = ("LD_*", "GCONV_PATH", "GLIBC_TUNABLES", "NVIDIA_*",
                        "AMD_VISIBLE_DEVICES")


def _kebab(name: str) -> str:
    return name.replace("_", "-")


class _Section(BaseModel):
    model_config = ConfigDict(
        alias_generator=_kebab, populate_by_name=True, extra="forbid", frozen=True
    )


class Interval(_Section):
    enabled: bool = True
    interval: float = Field(10.0, gt=0)


class AgentSection(_Section):
    id: str = Field(default_factory=lambda: f"i-{socket.gethostname()}")
    region: str = "local"
    scaling_group: str = "default"
    rpc_listen_addr: str = "0.0.0.0:6011"
    advertised_rpc_addr: str | None = None
    internal_addr: str = "0.0.0.0:6003"
    announce_internal_addr: str | None = None
    rpc_auth_agent_keypair: Path | None = None
    rpc_auth_manager_public_key: list[Path] = Field(default_factory=list)
    rpc_allow_plain: bool = False
    # A request's body: room for an upload_file of [api] max-upload-size and its framing.
    rpc_max_body_size: int = Field(65 * 2**20, gt=0)
    rpc_request_timeout: float = Field(300.0, gt=0)
    kernel_creation_concurrency: int = Field(4, ge=1, le=32)
    var_base_path: Path = Path("./var/lib/berth")
    ipc_base_path: Path = Path("./var/run/berth")
    image_commit_path: Path = Path("./var/lib/berth/commit")  # where commits are exported
    pid_file: Path | None = None
    allow_compute_plugins: list[str] | None = None
    block_compute_plugins: list[str] = Field(default_factory=list)
    skip_manager_detection: bool = False
    sync_container_lifecycles: Interval = Interval()

    @field_validator("rpc_listen_addr", "internal_addr")
    @classmethod
    def _host_port(cls, value: str) -> str:
        return checked_addr(value)

    @field_validator("rpc_auth_manager_public_key", mode="before")
    @classmethod
    def _one_or_many(cls, value: Any) -> Any:
        return [value] if isinstance(value, (str, Path)) else value


class ContainerSection(_Section):
    # The engine's API: "unix:///path/docker.sock" or "tcp://host:port"; None: DOCKER_HOST,
    # else the default socket.
    docker_host: str | None = None
    bind_host: str = "0.0.0.0"
    advertised_host: str | None = None
    port_range: tuple[int, int] = (30000, 31000)
    port_reuse_cooldown_sec: float = Field(60.0, ge=0)
    kernel_uid: int = Field(9001, ge=0)
    kernel_gid: int = Field(9001, ge=0)
    # What a kernel spec from the Manager may ask for; the kernel-uid/gid defaults above are
    # the operator's own choice and are not checked against these.
    kernel_uid_range: tuple[int, int] = (1, MAX_ID)
    kernel_gid_range: tuple[int, int] = (1, MAX_ID)
    allowed_supplementary_gids: list[int] | None = None  # None: any gid in kernel-gid-range
    environ_deny_list: list[str] = Field(default_factory=lambda: list(DEFAULT_ENVIRON_DENY))
    scratch_type: Literal["hostdir", "hostfile", "memory"] = "hostdir"
    scratch_root: Path = Path("./var/scratches")
    scratch_size: int = 0
    vfolder_allowed_roots: list[Path] = Field(default_factory=list)
    # Refuse a spec below the image's ai.backend.resource.min.* labels (the manager's rule).
    enforce_image_minimums: bool = False
    pids_limit: int = Field(4096, ge=16)
    nofile_limit: int = Field(65536, ge=64)
    stop_grace_sec: float = Field(10.0, ge=0)
    stats_type: Literal["cgroup", "docker"] = "cgroup"
    runner_path: Path | None = None

    @field_validator("scratch_size", mode="before")
    @classmethod
    def _size(cls, value: Any) -> int:
        return parse_binary_size(value)

    @field_validator("kernel_uid_range", "kernel_gid_range")
    @classmethod
    def _id_range(cls, value: tuple[int, int]) -> tuple[int, int]:
        low, high = value
        if not (0 <= low <= high <= MAX_ID):
            raise ValueError(f"must be [low, high] with 0 <= low <= high <= {MAX_ID}")
        return value

    @field_validator("allowed_supplementary_gids")
    @classmethod
    def _gids(cls, value: list[int] | None) -> list[int] | None:
        if value is not None and any(not 0 <= gid <= MAX_ID for gid in value):
            raise ValueError(f"gids must lie in [0, {MAX_ID}]")
        return value

    @field_validator("environ_deny_list")
    @classmethod
    def _patterns(cls, value: list[str]) -> list[str]:
        if any(not p.strip() or "=" in p for p in value):
            raise ValueError("entries are variable names or fnmatch patterns such as 'LD_*'")
        return value

    @field_validator("port_range")
    @classmethod
    def _range(cls, value: tuple[int, int]) -> tuple[int, int]:
        low, high = value
        if not (1024 < low <= high < 65536):
            raise ValueError("port-range must be [low, high] with 1024 < low <= high < 65536")
        return value

    @model_validator(mode="after")
    def _quota_needs_a_bounded_type(self) -> ContainerSection:
        if self.scratch_type == "hostdir" and self.scratch_size:
            raise ValueError(
                "scratch-size needs scratch-type 'hostfile' or 'memory' (hostdir has no quota)"
            )
        if self.scratch_type != "hostdir" and not self.scratch_size:
            raise ValueError(f"scratch-type {self.scratch_type!r} needs a scratch-size")
        return self


class ResourceSection(_Section):
    reserved_cpu: int = Field(1, ge=0)
    cpu_overcommit_ratio: float = Field(
        1.0, ge=1.0, le=1000.0,
        description="Each core is promised to kernels this many times over: a kernel's cpu "
                    "stays its CFS limit, accounted as a request of cpu / ratio, so the node "
                    "offers (cores - reserved-cpu) x ratio (Kubernetes' requests and limits "
                    "in a fixed proportion). 1.0: no overcommit. Raise it only for mostly "
                    "idle kernels (notebooks): busy ones then share, and slow, each other.")
    reserved_mem: int = 2**30
    reserved_disk: int = 8 * 2**30
    allocation_order: list[str] = Field(
        default_factory=lambda: ["cuda", "rocm", "tpu", "mock", "cpu", "mem"]
    )
    affinity_policy: Literal["INTERLEAVED", "PREFER_SINGLE_NODE"] = "INTERLEAVED"

    @field_validator("reserved_mem", "reserved_disk", mode="before")
    @classmethod
    def _size(cls, value: Any) -> int:
        return parse_binary_size(value)


class KernelLifecyclesSection(_Section):
    init_polling_attempt: int = Field(10, ge=1)
    init_polling_timeout_sec: float = Field(60.0, gt=0)
    init_timeout_sec: float = Field(60.0, gt=0)
    preparing_timeout_sec: float = Field(30.0, gt=0)
    creating_timeout_sec: float = Field(120.0, gt=0)
    terminating_timeout_sec: float = Field(60.0, gt=0)
    # A kernel whose container ends on its own: "none" ends the kernel (kernel_terminated);
    # "on-failure" starts a new container for a non-zero exit, after base * 2^(n-1) seconds
    # (at most cap), up to restart-max times in the kernel's life, then ends it.
    restart_policy: Literal["none", "on-failure"] = "none"
    restart_backoff_base_sec: float = Field(1.0, ge=0)
    restart_backoff_cap_sec: float = Field(30.0, ge=0)
    restart_max: int = Field(3, ge=0)


class ApiSection(_Section):
    pull_timeout: float = Field(7200.0, gt=0)
    commit_timeout: float | None = Field(None, gt=0)
    push_timeout: float | None = Field(None, gt=0)
    max_upload_size: int = 64 * 2**20
    max_download_size: int = 64 * 2**20

    @field_validator("max_upload_size", "max_download_size", mode="before")
    @classmethod
    def _size(cls, value: Any) -> int:
        return parse_binary_size(value)


class EtcdSection(_Section):
    namespace: str = "local"
    addr: str = "127.0.0.1:2379"
    user: str | None = None
    password: str | None = None

    @field_validator("addr")
    @classmethod
    def _addr(cls, value: str) -> str:
        return checked_addr(value, default_port=2379)


RedisRole = Literal["statistics", "live", "image", "container_log"]
_STORE_ROLES: dict[str, str] = {"statistics": "stat", "live": "live", "image": "image",
                                "container_log": "container_log"}


class RedisSection(_Section):
    addr: str = "127.0.0.1:6379"
    password: str | None = None
    db: int = Field(4, ge=0)  # the events stream (Backend.AI's "stream" role)
    backlog_size: int = Field(10000, ge=1)
    # The other roles' DB numbers are the manager's fixed ones (statistics 0, live 2, image 3,
    # container_log 6); a site whose manager was moved off them overrides them here.
    override_dbs: dict[RedisRole, int] = Field(default_factory=dict)

    @field_validator("addr")
    @classmethod
    def _addr(cls, value: str) -> str:
        return checked_addr(value, default_port=6379)

    @field_validator("override_dbs")
    @classmethod
    def _dbs(cls, value: dict[RedisRole, int]) -> dict[RedisRole, int]:
        if any(db < 0 for db in value.values()):
            raise ValueError("a Redis DB number must not be negative")
        return value

    def role_dbs(self) -> dict[str, int]:
        """``ManagerStore``'s role names → the overriding DB numbers."""
        return {_STORE_ROLES[role]: db for role, db in self.override_dbs.items()}


class LoggingSection(_Section):
    level: Literal["DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"] = "INFO"
    format: Literal["text", "json"] = "text"
    file: Path | None = None
    loki_endpoint: str | None = None


class DebugSection(_Section):
    enabled: bool = False
    heartbeat_interval: float = Field(20.0, gt=0)
    stats_interval: float = Field(5.0, gt=0)
    node_stats_interval: float = Field(5.0, gt=0)


class WatcherSection(_Section):
    service_addr: str = "0.0.0.0:6009"
    token_file: Path | None = None
    ssl_cert: Path | None = None
    ssl_key: Path | None = None


class ServiceTLSSection(_Section):
    """When both are given, HTTP service ports are served through TLS on the host side."""

    cert: Path | None = None
    key: Path | None = None


class ContainerLogsSection(_Section):
    max_length: int = 10 * 2**20
    chunk_size: int = 64 * 2**10

    @field_validator("max_length", "chunk_size", mode="before")
    @classmethod
    def _size(cls, value: Any) -> int:
        return parse_binary_size(value)


class WarmPoolSection(_Section):
    """Pre-started containers a create can claim (off while ``images`` is empty).

    ``images`` maps an image (as the Manager names it: its canonical ref) to how many idle
    containers of it to keep; ``max-total`` caps them all. Pool containers start with the
    ``cpu``/``mem`` shape and hold at most ``reserve-cpu``/``reserve-mem`` of the node, which is
    taken off the capacity kernels are allocated from (and nothing more); a claimed container
    gets the kernel's own allocation applied live.
    """

    images: dict[str, int] = Field(default_factory=dict)
    max_total: int = Field(4, ge=0)
    cpu: Decimal = Field(Decimal("0.25"), gt=0)
    mem: int = 128 * 2**20
    reserve_cpu: Decimal = Field(Decimal(1), ge=0)
    reserve_mem: int = 2**30
    refill_interval_sec: float = Field(5.0, gt=0)

    @field_validator("mem", "reserve_mem", mode="before")
    @classmethod
    def _size(cls, value: Any) -> int:
        return parse_binary_size(value)

    @field_validator("images")
    @classmethod
    def _sizes(cls, value: dict[str, int]) -> dict[str, int]:
        if any(n < 0 for n in value.values()) or any(not ref.strip() for ref in value):
            raise ValueError("images maps an image ref to a size >= 0")
        return value

    @model_validator(mode="after")
    def _fits_its_reserve(self) -> WarmPoolSection:
        total = min(self.max_total, sum(self.images.values()))
        if total * self.cpu > self.reserve_cpu or total * self.mem > self.reserve_mem:
            raise ValueError(
                f"{total} pool containers of cpu {self.cpu} and mem {self.mem} do not fit "
                f"reserve-cpu {self.reserve_cpu} and reserve-mem {self.reserve_mem}")
        return self

    @property
    def enabled(self) -> bool:
        return any(self.images.values()) and self.max_total > 0


class AgentConfig(_Section):
    agent: AgentSection = AgentSection()
    container: ContainerSection = ContainerSection()
    resource: ResourceSection = ResourceSection()
    kernel_lifecycles: KernelLifecyclesSection = KernelLifecyclesSection()
    api: ApiSection = ApiSection()
    etcd: EtcdSection | None = None
    redis: RedisSection | None = None
    logging: LoggingSection = LoggingSection()
    debug: DebugSection = DebugSection()
    watcher: WatcherSection = WatcherSection()
    service_tls: ServiceTLSSection = ServiceTLSSection()
    container_logs: ContainerLogsSection = ContainerLogsSection()
    warm_pool: WarmPoolSection = WarmPoolSection()
    plugins: dict[str, dict[str, Any]] = Field(default_factory=dict)
    volumes: dict[str, Any] = Field(default_factory=dict)

    @model_validator(mode="after")
    def _rpc_auth(self) -> AgentConfig:
        keyed = self.agent.rpc_auth_agent_keypair is not None
        if not keyed and not self.agent.rpc_allow_plain:
            raise ValueError(
                "agent.rpc-auth-agent-keypair is required unless agent.rpc-allow-plain = true"
            )
        if keyed and not self.agent.rpc_auth_manager_public_key:
            raise ValueError("agent.rpc-auth-manager-public-key must name at least one key file")
        return self


_ENV_OVERRIDES: dict[str, tuple[str, ...]] = {
    "BACKEND_NAMESPACE": ("etcd", "namespace"),
    "BACKEND_ETCD_ADDR": ("etcd", "addr"),
    "BACKEND_ETCD_USER": ("etcd", "user"),
    "BACKEND_ETCD_PASSWORD": ("etcd", "password"),
    "BACKEND_PID_FILE": ("agent", "pid-file"),
    "BACKEND_CONTAINER_PORT_RANGE": ("container", "port-range"),
    "BACKEND_BIND_HOST_OVERRIDE": ("container", "bind-host"),
    "BACKEND_SCRATCH_ROOT": ("container", "scratch-root"),
}


def _set_path(data: dict[str, Any], path: tuple[str, ...], value: Any) -> None:
    node = data
    for key in path[:-1]:
        node = node.setdefault(key, {})
        if not isinstance(node, dict):
            raise ConfigError("expected a table", key_path=".".join(path[:-1]))
    node[path[-1]] = value


def _normalise_keys(data: Any) -> Any:
    if isinstance(data, dict):
        return {str(k).replace("_", "-"): _normalise_keys(v) for k, v in data.items()}
    return data


def _apply_env(data: dict[str, Any], env: Mapping[str, str]) -> None:
    for name, path in _ENV_OVERRIDES.items():
        if name in env:
            raw = env[name]
            value: Any = [int(p) for p in raw.replace("-", ",").split(",")] if (
                name == "BACKEND_CONTAINER_PORT_RANGE") else raw
            _set_path(data, path, value)
    host, port = env.get("BACKEND_AGENT_HOST_OVERRIDE"), env.get("BACKEND_AGENT_PORT")
    if host or port:
        current = data.get("agent", {}).get("rpc-listen-addr", AgentSection().rpc_listen_addr)
        cur_host, cur_port = parse_host_port(current)
        _set_path(data, ("agent", "rpc-listen-addr"), f"{host or cur_host}:{port or cur_port}")


def find_config_file(explicit: Path | None, env: Mapping[str, str]) -> Path | None:
    if explicit is not None:
        return explicit
    if env.get("BACKEND_CONFIG_FILE"):
        return Path(env["BACKEND_CONFIG_FILE"])
    for candidate in (
        Path("agent.toml"),
        Path.home() / ".config" / "backend.ai" / "agent.toml",
        Path("/etc/backend.ai/agent.toml"),
    ):
        if candidate.is_file():
            return candidate
    return None


def _read_toml(path: Path) -> dict[str, Any]:
    try:
        with path.open("rb") as fh:
            return tomllib.load(fh)
    except FileNotFoundError as exc:
        raise ConfigError(f"config file not found: {path}") from exc
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: not valid TOML: {exc}") from exc


def _validate(data: dict[str, Any], base_dir: Path | None) -> AgentConfig:
    config = validate_config(data)
    return _resolve_paths(config, base_dir) if base_dir else config


def validate_config(data: Mapping[str, Any], origin: str = "") -> AgentConfig:
    """The config from merged raw data; :class:`ConfigError` naming the first bad key (and
    where its value came from, e.g. ``etcd``)."""
    try:
        return AgentConfig.model_validate(data)
    except ValidationError as exc:
        first = exc.errors()[0]
        key_path = ".".join(str(p) for p in first["loc"])
        message = f"{first['msg']} (from {origin})" if origin else first["msg"]
        raise ConfigError(message, key_path=key_path) from exc


def _resolve_paths(config: AgentConfig, base_dir: Path) -> AgentConfig:
    """Relative paths in a file are relative to that file's directory, not to the cwd."""

    def fix(p: Path | None) -> Path | None:
        return None if p is None or p.is_absolute() else (base_dir / p)

    agent_updates: dict[str, Any] = {
        name: fixed for name in ("var_base_path", "ipc_base_path", "image_commit_path",
                                 "pid_file", "rpc_auth_agent_keypair")
        if (fixed := fix(getattr(config.agent, name))) is not None
    }
    log_file = fix(config.logging.file)
    agent_updates["rpc_auth_manager_public_key"] = [
        fix(p) or p for p in config.agent.rpc_auth_manager_public_key
    ]
    container_updates: dict[str, Any] = {
        name: fixed for name in ("scratch_root", "runner_path")
        if (fixed := fix(getattr(config.container, name))) is not None
    }
    container_updates["vfolder_allowed_roots"] = [
        fix(p) or p for p in config.container.vfolder_allowed_roots
    ]
    return config.model_copy(update={
        "agent": config.agent.model_copy(update=agent_updates),
        "container": config.container.model_copy(update=container_updates),
        "logging": (config.logging.model_copy(update={"file": log_file}) if log_file
                    else config.logging),
    })


def load_config(
    path: Path | str | None = None,
    env: Mapping[str, str] | None = None,
    overrides: Mapping[str, Any] | None = None,
) -> AgentConfig:
    """Read, merge and validate; raises :class:`ConfigError` naming the offending key path."""
    env = os.environ if env is None else env
    found = find_config_file(Path(path) if path is not None else None, env)
    data = _normalise_keys(_read_toml(found)) if found else {}
    _apply_env(data, env)
    for dotted, value in (overrides or {}).items():
        _set_path(data, tuple(dotted.split(".")), value)
    return _validate(data, found.resolve().parent if found else None)
