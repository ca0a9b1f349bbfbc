"""Find, build and initialise compute plugins from the `berth.accelerators` entry-point group.

Rules (pluggy-like): a plugin is loaded when its entry-point name passes the allow list (None
means everything) and is not blocked; plugins with `require_explicit_allow` (mock) need to be
named in the allow list. Each plugin is checked against the `ComputePlugin` protocol, its key
must equal the entry-point name, its slots must start with `{key}.`, and keys are unique.
Any failure in loading, checking or `init()` is logged and that plugin skipped — except the
intrinsic `cpu` and `mem`, without which the node cannot run anything: their failure raises
`PluginError`. When no entry point provides `cpu`/`mem`, the built-in classes are used.
``on_failure(name, exc)`` is told every skipped plugin (the agent reports it as ``agent_error``).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Collection, Iterable, Mapping
from importlib.metadata import EntryPoint, entry_points
from typing import Any

from berth.errors import PluginError
from berth.plugins.cpu import CPUPlugin
from berth.plugins.mem import MemoryPlugin
from berth.resources import ComputePlugin

log = logging.getLogger(__name__)

ENTRY_POINT_GROUP = "berth.accelerators"
INTRINSIC: dict[str, Callable[..., Any]] = {"cpu": CPUPlugin, "mem": MemoryPlugin}
FailureHook = Callable[[str, BaseException], None]


def discover(group: str = ENTRY_POINT_GROUP) -> list[EntryPoint]:
    return list(entry_points(group=group))


def selected(name: str, factory: Callable[..., Any], allow: Collection[str] | None,
             block: Collection[str]) -> bool:
    if name in INTRINSIC:
        if name in block:
            log.warning("plugin %s is intrinsic and cannot be blocked; loading it", name)
        return True
    if name in block:
        return False
    if getattr(factory, "require_explicit_allow", False):
        return allow is not None and name in allow
    return allow is None or name in allow


async def load_plugins(*, allow: Collection[str] | None = None, block: Collection[str] = (),
                       configs: Mapping[str, Mapping[str, Any]] | None = None,
                       entries: Iterable[EntryPoint] | None = None,
                       on_failure: FailureHook | None = None) -> list[ComputePlugin]:
    """Initialised plugins, intrinsic first. `configs[name]` is passed to the constructor."""
    told: FailureHook = on_failure or (lambda name, exc: None)
    wanted = [e for e in (discover() if entries is None else entries)
              if e.name in INTRINSIC or (e.name not in block and (allow is None or e.name in allow))]
    factories = _factories(wanted, told)
    plugins: list[ComputePlugin] = []
    for name, factory in factories.items():
        if not selected(name, factory, allow, block):
            log.info("compute plugin %s not selected", name)
            continue
        plugin = await _build(name, factory, (configs or {}).get(name, {}), plugins, told)
        if plugin is not None:
            plugins.append(plugin)
    return plugins


def _factories(entries: Iterable[EntryPoint],
               told: FailureHook) -> dict[str, Callable[..., Any]]:
    found: dict[str, Callable[..., Any]] = dict(INTRINSIC)
    for entry in entries:
        try:
            found[entry.name] = entry.load()
        except Exception as exc:
            told(entry.name, exc)
            if entry.name in INTRINSIC:
                log.exception("intrinsic plugin %s failed to import; using the built-in",
                              entry.name)
            else:
                log.exception("compute plugin %s failed to import; skipped", entry.name)
    intrinsic_first = sorted(found, key=lambda n: (n not in INTRINSIC, n))
    return {name: found[name] for name in intrinsic_first}


async def _build(name: str, factory: Callable[..., Any], config: Mapping[str, Any],
                 loaded: list[ComputePlugin], told: FailureHook) -> ComputePlugin | None:
    try:
        plugin = factory(dict(config))
        check_plugin(name, plugin, loaded)
        await plugin.init()
    except Exception as exc:
        if name in INTRINSIC:
            raise PluginError(f"intrinsic plugin {name} failed: {exc!r}", plugin=name) from exc
        log.exception("compute plugin %s failed; skipped", name)
        told(name, exc)
        return None
    log.info("compute plugin %s loaded: %d device(s)", name, len(plugin.list_devices()))
    return plugin  # type: ignore[no-any-return]


def check_plugin(name: str, plugin: object, loaded: Iterable[ComputePlugin]) -> None:
    if not isinstance(plugin, ComputePlugin):
        raise PluginError(f"{name}: does not implement the ComputePlugin protocol", plugin=name)
    if plugin.key != name:
        raise PluginError(f"{name}: key {plugin.key!r} differs from its entry point",
                          plugin=name)
    if any(p.key == plugin.key for p in loaded):
        raise PluginError(f"{name}: duplicate plugin key", plugin=name)
    for slot, _ in plugin.slot_types:
        if name not in INTRINSIC and not slot.startswith(f"{name}."):
            raise PluginError(f"{name}: slot {slot!r} must start with {name!r}.", plugin=name)
