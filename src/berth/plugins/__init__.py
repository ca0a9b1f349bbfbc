"""Compute plugins: the protocol, the loader and the built-in cpu/mem/cuda/rocm/tpu/mock."""

from berth.plugins.base import (
    AttachedDevice,
    ComputeDevice,
    ComputePlugin,
    DockerArgs,
    HardwareInfo,
    Measure,
    merge_docker_args,
    plugin_env_names,
)
from berth.plugins.loader import ENTRY_POINT_GROUP, check_plugin, load_plugins

__all__ = [
    "ENTRY_POINT_GROUP",
    "AttachedDevice",
    "ComputeDevice",
    "ComputePlugin",
    "DockerArgs",
    "HardwareInfo",
    "Measure",
    "check_plugin",
    "load_plugins",
    "merge_docker_args",
    "plugin_env_names",
]
