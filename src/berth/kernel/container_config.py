"""Build the Docker create config of a kernel from plain values (pure, tested without Docker).

Limits are enforced by the kernel, not promised: CPU by CFS quota plus cpuset pinning (from the
cpu plugin), memory with swap disabled (mem plugin), ``/dev/shm`` of ``resource_opts.shmem``, a
PIDs limit, a ``nofile`` ulimit and ``Init: true`` so SIGTERM reaches the kernel's processes.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from berth.kernel.spec import KernelSpec
from berth.resources import merge_docker_args
from berth.runner import CONTAINER_IPC_DIR, CONTAINER_RUNNER_DIR, CONTAINER_SOCKET, SERVICE_DEFS_DIR
from berth.types import AGENT_ID_LABEL, KERNEL_ID_LABEL, OWNER_LABEL, SESSION_ID_LABEL, KernelId

__all__ = [
    "ContainerPlan",
    "agent_environ",
    "build_container_config",
    "container_name",
    "has_runner",
    "idle_command",
    "kernel_environ",
    "overridden_environ",
    "runner_command",
]

BOOTSTRAP_PATH = "/home/work/bootstrap.sh"


@dataclass(frozen=True)
class ContainerPlan:
    """Everything the builder needs, already decided by the lifecycle."""

    agent_id: str
    kernel_id: KernelId
    session_id: str
    spec: KernelSpec
    image_ref: str
    image_labels: Mapping[str, str]
    uid: int
    gid: int
    resource_args: Mapping[str, Any]  # {"HostConfig": {...}, "Env": {...}}: plugins, limits
    mounts: Sequence[Mapping[str, Any]]  # Docker "Mounts" entries
    port_map: Mapping[int, int]  # container port → host port (published on bind_host)
    bind_host: str
    pids_limit: int
    nofile_limit: int
    service_ports_label: str
    extra_env: Mapping[str, str]
    loopback_ports: Mapping[int, int] = field(default_factory=dict)  # → 127.0.0.1 port
    owned_env: frozenset[str] = frozenset()  # plugin variables a spec may not set at all
    default_env: Mapping[str, str] = field(default_factory=dict)  # below the spec's environ
    network_name: str | None = None  # a user network to join instead of the default bridge
    network_aliases: Sequence[str] = ()  # names the kernel answers to on that network


def container_name(kernel_id: KernelId) -> str:
    return f"berth-kernel.{kernel_id}"


def has_runner(labels: Mapping[str, str]) -> bool:
    runtime_type = labels.get("ai.backend.runtime-type", "app")
    path = labels.get("ai.backend.runtime-path", "")
    return runtime_type == "python" or path.rsplit("/", 1)[-1].startswith("python")


def runner_command(labels: Mapping[str, str], *, bootstrap: bool) -> list[str]:
    # -I -S: the runner is stdlib-only, so no site (Debian's runs apport's hook: a third of
    # the start-up), no user site, no PYTHON* variables; the code it runs gets a plain python.
    cmd = [labels.get("ai.backend.runtime-path") or "/usr/bin/python3", "-I", "-S", "-u",
           f"{CONTAINER_RUNNER_DIR}/krunner.py", "--socket", CONTAINER_SOCKET,
           "--ipc", CONTAINER_IPC_DIR, "--work", "/home/work", "--config", "/home/config",
           "--service-defs", SERVICE_DEFS_DIR]
    if bootstrap:
        cmd += ["--bootstrap", BOOTSTRAP_PATH]
    return cmd


def idle_command(*, bootstrap: bool) -> list[str]:
    """For images without a runtime: run the bootstrap, then wait for SIGTERM without spinning."""
    script = "trap 'exit 0' TERM INT; "
    if bootstrap:
        script += f"sh {BOOTSTRAP_PATH} >/home/config/ipc/bootstrap.log 2>&1; "
        script += "echo $? >/home/config/ipc/bootstrap.exit; "
    script += "while :; do sleep 3600 & wait $!; done"
    return ["/bin/sh", "-c", script]


# Defaults a spec may change; every other variable the agent sets is the agent's.
KERNEL_ENV_DEFAULTS = {"LANG": "C.UTF-8"}


def agent_environ(plan: ContainerPlan) -> dict[str, str]:
    """What the agent and its plugins set for this kernel: identity, ports, devices, cores."""
    spec = plan.spec
    env = {
        "HOME": "/home/work",
        "BACKENDAI_KERNEL_ID": plan.kernel_id,
        "BACKENDAI_SESSION_ID": plan.session_id,
        "BACKENDAI_KERNEL_IMAGE": spec.image.canonical,
        "BACKENDAI_CLUSTER_ROLE": spec.cluster_role,
        "BACKENDAI_CLUSTER_IDX": str(spec.cluster_idx),
        "BACKENDAI_CLUSTER_HOST": spec.hostname(),
        "BACKENDAI_PREOPEN_PORTS": ",".join(str(p) for p in spec.preopen_ports),
        "BACKENDAI_SERVICE_PORTS": plan.image_labels.get("ai.backend.service-ports", ""),
        "LOCAL_USER_ID": str(plan.uid),
        "LOCAL_GROUP_ID": str(plan.gid),
    }
    env.update({k: str(v) for k, v in (plan.resource_args.get("Env") or {}).items()})
    cores = str(int(spec.cpu.to_integral_value(rounding="ROUND_CEILING")))
    for name in plan.image_labels.get("ai.backend.envs.corecount", "").split(","):
        if name.strip():
            env[name.strip()] = cores
    env.update(plan.extra_env)
    return env


def kernel_environ(plan: ContainerPlan) -> dict[str, str]:
    """The kernel's env: defaults, then the spec's ``environ``, then the agent's on top.

    Agent- and plugin-set variables win over the spec's (the Manager legitimately sends some of
    them, e.g. ``BACKENDAI_KERNEL_ID``, with the same value), and the spec's value of a
    variable a loaded plugin owns is dropped even when that plugin set nothing for this kernel;
    :func:`overridden_environ` names the ones a spec tried to change. Variables on the
    deny-list never get here: the lifecycle refuses the spec (:mod:`berth.kernel.policy`).
    ``PATH`` from the spec replaces the image's, as Docker does; the agent's own commands
    (runner, idle loop, batch fallback) use absolute paths and do not depend on it.
    """
    user = {k: v for k, v in plan.spec.environ.items() if k not in plan.owned_env}
    return {**KERNEL_ENV_DEFAULTS, **plan.default_env, **user, **agent_environ(plan)}


def overridden_environ(plan: ContainerPlan) -> list[str]:
    """Names the spec's ``environ`` set to a value the agent replaced or dropped."""
    agent = agent_environ(plan)
    return sorted(k for k, v in plan.spec.environ.items()
                  if (k in agent and agent[k] != v) or (k in plan.owned_env and k not in agent))


def build_container_config(plan: ContainerPlan, command: Sequence[str]) -> dict[str, Any]:
    spec = plan.spec
    env = kernel_environ(plan)
    exposed: dict[str, dict[str, Any]] = {f"{port}/tcp": {} for port in (*plan.port_map, *plan.loopback_ports)}
    bindings = {f"{c}/tcp": [{"HostIp": plan.bind_host, "HostPort": str(h)}]
                for c, h in plan.port_map.items()}
    # Ports served through the agent's TLS proxy are published on loopback only.
    bindings.update({f"{c}/tcp": [{"HostIp": "127.0.0.1", "HostPort": str(h)}]
                     for c, h in plan.loopback_ports.items()})
    host_config: dict[str, Any] = {
        "Init": True,
        "PidsLimit": plan.pids_limit,
        "Ulimits": [{"Name": "nofile", "Soft": plan.nofile_limit, "Hard": plan.nofile_limit}],
        "Mounts": [dict(m) for m in plan.mounts],
        "PortBindings": bindings,
        "PublishAllPorts": False,
        "Privileged": False,
        "GroupAdd": [str(g) for g in spec.supplementary_gids],
        "LogConfig": {"Type": "json-file", "Config": {"max-size": "10m", "max-file": "2"}},
    }
    if spec.shmem is not None:
        host_config["ShmSize"] = spec.shmem
    host_config = merge_docker_args(host_config, plan.resource_args.get("HostConfig") or {})
    networking: dict[str, Any] = {}
    if plan.network_name:
        host_config["NetworkMode"] = plan.network_name
        networking = {"EndpointsConfig": {
            plan.network_name: {"Aliases": list(plan.network_aliases)}}}
    labels = {
        OWNER_LABEL: plan.agent_id,
        AGENT_ID_LABEL: plan.agent_id,
        KERNEL_ID_LABEL: plan.kernel_id,
        SESSION_ID_LABEL: plan.session_id,
        "ai.backend.owner-user-id": spec.owner_user_id or "",
        "ai.backend.owner-project-id": spec.owner_project_id or "",
        "ai.backend.service-ports": plan.service_ports_label,
        "ai.backend.internal.block-service-ports": "0",
    }
    config: dict[str, Any] = {
        "Image": plan.image_ref,
        "Cmd": list(command),
        "Entrypoint": [],
        "Env": [f"{k}={v}" for k, v in sorted(env.items())],
        "User": f"{plan.uid}:{plan.gid}",
        "WorkingDir": "/home/work",
        "Hostname": spec.hostname(),
        "Labels": labels,
        "ExposedPorts": exposed,
        "StopSignal": "SIGTERM",
        "Tty": False,
        "OpenStdin": False,
        "HostConfig": host_config,
    }
    if networking:
        config["NetworkingConfig"] = networking
    return config


def resource_txt(spec: KernelSpec, allocation: Mapping[str, Any]) -> str:
    """``config/resource.txt`` in Backend.AI's shape (reference §6.6), for tools inside the kernel."""
    lines = [
        "SLOTS=" + json.dumps({k: str(v) for k, v in spec.resource_slots.items()}),
        "ALLOCATION=" + json.dumps(allocation, sort_keys=True),
    ]
    return "\n".join(lines) + "\n"
