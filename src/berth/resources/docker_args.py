"""Fragments of a container-create body and the one rule that merges them.

Every part that shapes a kernel's container contributes a fragment, ``{"HostConfig": {...},
"Env": {...}}``: the container builder's own settings, each compute plugin's share (CPU quota
and pinning, memory, devices) and each limit contributor (block-I/O throttling). They are all
combined by :func:`merge_docker_args`, in that order, so no part can undo another by accident.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Protocol

from berth.errors import PluginError

__all__ = ["DockerArgs", "LimitContributor", "Override", "merge_docker_args"]

DockerArgs = dict[str, Any]
"""A fragment of a container-create body: `{"HostConfig": {...}, "Env": {NAME: value}}`."""


@dataclass(frozen=True)
class Override:
    """A value that replaces whatever an earlier fragment set at the same place."""

    value: Any


class LimitContributor(Protocol):
    """A limit on a kernel's container beyond its slots (block-I/O rates, say), given as a
    fragment from the kernel's id and its spec's ``resource_opts``."""

    def docker_args(self, kernel_id: str, resource_opts: Mapping[str, Any]) -> DockerArgs: ...


def merge_docker_args(*fragments: Mapping[str, Any]) -> DockerArgs:
    """One new body from ``fragments``, earliest first; none of them is changed.

    The rule, the same at every depth:

    - dicts merge key by key, recursively;
    - lists concatenate, an item equal to one already there is left out (two contributors
      may both name a group or a device);
    - anything else (a scalar, or a list against a dict) is set once: a later fragment may
      repeat an equal value, but a different one raises :class:`PluginError` naming the
      path, unless the later fragment wraps it in :class:`Override`, which replaces the
      value there (dict, list or scalar) outright.
    """
    out: DockerArgs = {}
    for fragment in fragments:
        _merge_into(out, fragment, ())
    return out


def _merge_into(into: dict[str, Any], fragment: Mapping[str, Any], path: tuple[str, ...]
                ) -> None:
    for name, value in fragment.items():
        where = (*path, name)
        if isinstance(value, Override):
            into[name] = _plain(value.value)
        elif name not in into:
            into[name] = _plain(value)
        else:
            into[name] = _combined(into[name], value, where)


def _combined(current: Any, value: Any, where: tuple[str, ...]) -> Any:
    if isinstance(current, dict) and isinstance(value, Mapping):
        _merge_into(current, value, where)
        return current
    if isinstance(current, list) and isinstance(value, list):
        for item in map(_plain, value):
            if item not in current:
                current.append(item)
        return current
    plain = _plain(value)
    if plain != current:
        raise PluginError(f"conflicting values for {'.'.join(where)} in the container config",
                          key=".".join(where), value=current, other=plain)
    return current


def _plain(value: Any) -> Any:
    """A deep copy with every `Override` unwrapped and every mapping a plain dict."""
    if value is None or isinstance(value, str | int | float):
        return value  # immutable: no copy needed
    if isinstance(value, list):
        return [_plain(v) for v in value]
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, Override):
        return _plain(value.value)
    if isinstance(value, Mapping):
        return {k: _plain(v) for k, v in value.items()}
    return copy.deepcopy(value)
