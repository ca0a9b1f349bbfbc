"""Service definitions (`/etc/backend.ai/service-defs/<name>.json`), pure, standard library only.

Backend.AI's format: `command` (argv list, or a string run by `shell`, default bash),
`prestart_actions` (alias `prestart`) [{action, args, ref}], `env`, `url_template`,
`allowed_arguments`, `allowed_envs`, `default_arguments`, `noop`.
Strings are interpolated: `{var}`, `{ports[0]}` and `${{ var }}`, with `{{`/`}}` as literal
braces; variables are `runtime_path`, `ports` and the `ref` results of earlier prestart actions.
"""

from __future__ import annotations

import json
import re
import shlex
from typing import Any, Mapping, NamedTuple

ACTIONS = ("write_file", "write_tempfile", "writelines", "mkdir", "run_command", "log")

_TOKEN = re.compile(
    r"\{\{|\}\}"
    r"|\$\{\{\s*(?P<a>[A-Za-z_]\w*(?:\[\d+\])?)\s*\}\}"
    r"|\{(?P<b>[A-Za-z_]\w*(?:\[\d+\])?)\}"
)
_EXPR = re.compile(r"(?P<name>[A-Za-z_]\w*)(?:\[(?P<index>\d+)\])?$")


class ServiceDefinitionError(ValueError):
    """The definition is malformed or a request is not allowed by it."""


class PrestartAction(NamedTuple):
    action: str
    args: dict[str, Any]
    ref: str | None


class ServiceDefinition(NamedTuple):
    name: str
    command: Any  # list of str, or str (shell)
    shell: str
    noop: bool
    url_template: str
    prestart: tuple[PrestartAction, ...]
    env: dict[str, str]
    allowed_arguments: tuple[str, ...]
    allowed_envs: tuple[str, ...]
    default_arguments: dict[str, Any]


def _resolve(expr: str, variables: Mapping[str, Any]) -> str:
    match = _EXPR.match(expr)
    if match is None or match.group("name") not in variables:
        raise ServiceDefinitionError("unknown variable %r" % expr)
    value = variables[match.group("name")]
    if match.group("index") is not None:
        try:
            value = value[int(match.group("index"))]
        except (IndexError, TypeError, KeyError):
            raise ServiceDefinitionError("no element %r" % expr) from None
    return str(value)


def interpolate(value: Any, variables: Mapping[str, Any]) -> Any:
    """Interpolate every string inside `value` (str, list or dict, recursively)."""
    if isinstance(value, str):
        def replace(m: re.Match[str]) -> str:
            text = m.group(0)
            if text in ("{{", "}}"):
                return text[0]
            return _resolve(m.group("a") or m.group("b"), variables)
        return _TOKEN.sub(replace, value)
    if isinstance(value, list):
        return [interpolate(v, variables) for v in value]
    if isinstance(value, dict):
        return {k: interpolate(v, variables) for k, v in value.items()}
    return value


def _parse_action(raw: Any) -> PrestartAction:
    if not isinstance(raw, dict) or raw.get("action") not in ACTIONS:
        raise ServiceDefinitionError("invalid prestart action %r" % (raw,))
    args = raw.get("args") or {}
    if not isinstance(args, dict):
        raise ServiceDefinitionError("prestart args must be an object")
    return PrestartAction(raw["action"], args, raw.get("ref"))


def _str_tuple(raw: Any, key: str) -> tuple[str, ...]:
    if raw is None:
        return ()
    if not isinstance(raw, list) or not all(isinstance(x, str) for x in raw):
        raise ServiceDefinitionError("%s must be a list of strings" % key)
    return tuple(raw)


def parse_definition(name: str, raw: Any) -> ServiceDefinition:
    if not isinstance(raw, dict):
        raise ServiceDefinitionError("service definition %s is not an object" % name)
    command = raw.get("command")
    noop = bool(raw.get("noop", False))
    valid_list = isinstance(command, list) and command and all(isinstance(c, str) for c in command)
    if not noop and not (valid_list or (isinstance(command, str) and command.strip())):
        raise ServiceDefinitionError("service %s: command must be a list or a string" % name)
    env = raw.get("env") or {}
    if not isinstance(env, dict):
        raise ServiceDefinitionError("service %s: env must be an object" % name)
    return ServiceDefinition(
        name=name, command=command, shell=str(raw.get("shell", "bash")), noop=noop,
        url_template=str(raw.get("url_template", "")),
        prestart=tuple(_parse_action(a) for a in raw.get("prestart_actions", raw.get("prestart")) or []),
        env={str(k): str(v) for k, v in env.items()},
        allowed_arguments=_str_tuple(raw.get("allowed_arguments"), "allowed_arguments"),
        allowed_envs=_str_tuple(raw.get("allowed_envs"), "allowed_envs"),
        default_arguments=dict(raw.get("default_arguments") or {}),
    )


def parse_definition_text(name: str, text: str) -> ServiceDefinition:
    try:
        raw = json.loads(text)
    except ValueError as exc:
        raise ServiceDefinitionError("service %s: invalid JSON: %s" % (name, exc)) from None
    return parse_definition(name, raw)


def extra_arguments(defn: ServiceDefinition, arguments: Mapping[str, Any]) -> list[str]:
    """Allow-listed user arguments over the definition's defaults, as argv items."""
    if not isinstance(arguments, Mapping):
        raise ServiceDefinitionError("arguments for %s must be an object" % defn.name)
    merged = dict(defn.default_arguments)
    for key, value in arguments.items():
        if key not in defn.allowed_arguments:
            raise ServiceDefinitionError("argument %s is not allowed for %s" % (key, defn.name))
        merged[key] = value
    argv: list[str] = []
    for key, value in merged.items():
        if value is None or value is True:
            argv.append(key)
        elif isinstance(value, list):
            for item in value:
                argv += [key, str(item)]
        elif value is not False:
            argv += [key, str(value)]
    return argv


def extra_envs(defn: ServiceDefinition, envs: Mapping[str, Any]) -> dict[str, str]:
    if not isinstance(envs, Mapping):
        raise ServiceDefinitionError("envs for %s must be an object" % defn.name)
    for key in envs:
        if key not in defn.allowed_envs:
            raise ServiceDefinitionError("env %s is not allowed for %s" % (key, defn.name))
    return {str(k): str(v) for k, v in envs.items()}


def build_argv(defn: ServiceDefinition, variables: Mapping[str, Any],
               options: Mapping[str, Any], shell_path: str) -> list[str]:
    """The final argv: interpolated command plus allow-listed arguments."""
    extra = extra_arguments(defn, options.get("arguments") or {})
    command = interpolate(defn.command, variables)
    if isinstance(command, str):
        return [shell_path, "-c", " ".join([command] + [shlex.quote(a) for a in extra])]
    return list(command) + extra


def build_env(defn: ServiceDefinition, variables: Mapping[str, Any],
              options: Mapping[str, Any]) -> dict[str, str]:
    env = {k: str(interpolate(v, variables)) for k, v in defn.env.items()}
    env.update(extra_envs(defn, options.get("envs") or {}))
    return env
