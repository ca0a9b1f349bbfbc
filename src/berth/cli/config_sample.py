"""Render a sample ``agent.toml`` with every key and its default, from the typed model itself,
so the sample can never drift from what :func:`berth.config.load_config` accepts."""

from __future__ import annotations

import json
import textwrap
from pathlib import Path
from typing import Any

from pydantic import BaseModel

from berth.config import AgentConfig, AgentSection, EtcdSection, RedisSection

__all__ = ["render_sample"]

_OPTIONAL_SECTIONS: dict[str, type[BaseModel]] = {"etcd": EtcdSection, "redis": RedisSection}
_HEADER = """\
# Berth agent configuration: every key with its default.
# Keys follow Backend.AI's agent.toml where Backend.AI names the thing.
# Precedence: command line > BACKEND_* environment > this file > etcd overlay > defaults
# (etcd's config/agent sections api, container-logs and kernel-lifecycles, and
#  config/container kernel-uid/kernel-gid, override this file as in Backend.AI).
"""


def _value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, Path):
        return json.dumps(str(value))
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(_value(v) for v in value) + "]"
    if isinstance(value, dict):
        return "{ " + ", ".join(f"{k} = {_value(v)}" for k, v in value.items()) + " }"
    if isinstance(value, str):
        return json.dumps(value)
    return str(value)


def _section(name: str, model: BaseModel | None, cls: type[BaseModel], commented: bool) -> str:
    prefix = "# " if commented else ""
    lines = [f"{prefix}[{name}]"]
    instance = model if model is not None else cls()
    nested: list[str] = []
    for field, info in cls.model_fields.items():
        key = info.alias or field
        value = getattr(instance, field)
        if isinstance(value, BaseModel):
            nested.append(_section(f"{name}.{key}", value, type(value), commented))
            continue
        if field == "id" and cls is AgentSection:
            lines.append('# id = "i-<hostname>"   # default: i- followed by the host name')
            continue
        if info.description:
            lines.extend(f"# {line}" for line in textwrap.wrap(info.description, 92))
        if value is None:
            lines.append(f"# {key} =")
        else:
            lines.append(f"{prefix}{key} = {_value(value)}")
    return "\n".join(lines + [""] + nested)


def render_sample() -> str:
    config = AgentConfig.model_validate({"agent": {"rpc-allow-plain": True}})
    parts = [_HEADER]
    for field, info in AgentConfig.model_fields.items():
        key = info.alias or field
        value = getattr(config, field)
        if field in _OPTIONAL_SECTIONS:
            parts.append("# Optional: uncomment to enable.\n"
                         + _section(key, None, _OPTIONAL_SECTIONS[field], commented=True))
        elif isinstance(value, BaseModel):
            parts.append(_section(key, value, type(value), commented=False))
        else:
            parts.append(f"[{key}]   # per-plugin tables, e.g. [plugins.mock]\n")
    text = "\n".join(parts).replace("rpc-allow-plain = true", "rpc-allow-plain = false")
    text = text.replace(
        "[warm-pool]\nimages = {  }",
        "[warm-pool]\n# Pre-started containers per image (off while empty), e.g.\n"
        '# images = { "berth/python:3.11" = 2 }\nimages = {  }')
    return text.replace(
        "# rpc-auth-agent-keypair =\nrpc-auth-manager-public-key = []",
        "# CurveZMQ key files (`berth keys generate`); plain RPC needs rpc-allow-plain = true.\n"
        'rpc-auth-agent-keypair = "keys/agent.key_secret"\n'
        'rpc-auth-manager-public-key = ["keys/manager.key"]')
