"""Restricted unpickling of the few Backend.AI classes that travel as pickles (reference §1.5).

Backend.AI's msgpack puts enums, ``ImageRef``, ``ResourceSlot``, ``SlotName``, ``BinarySize``
and ``Decimal`` on the wire as pickles. Berth never sends pickles and never imports a class a
peer names: ``find_class`` resolves only the allow-listed (module, name) pairs below to local
shims, and every shim is turned into plain data (str, int, dict, Decimal) before a handler
sees it. Anything else raises :class:`~berth.errors.ProtocolError`.
"""

from __future__ import annotations

import io
import pickle
from decimal import Decimal
from typing import Any, Self

from berth.errors import ProtocolError

_TYPES = "ai.backend.common.types"
_DOCKER = "ai.backend.common.docker"
_KERNEL_EVENT_TYPES = "ai.backend.common.events.event_types.kernel.types"

# Enum classes whose members may arrive, keyed by the (module, class) they are pickled
# under (Backend.AI 26.9 moved KernelLifecycleEventReason out of ``types``); the mapping
# spells out the names whose value is not the kebab-case of the member name.
_ENUMS: dict[tuple[str, str], dict[str, str]] = {
    (_TYPES, "SessionTypes"): {},
    (_TYPES, "ClusterMode"): {},
    (_TYPES, "AutoPullBehavior"): {},
    (_TYPES, "KernelLifecycleEventReason"): {},  # before 26.9
    (_KERNEL_EVENT_TYPES, "KernelLifecycleEventReason"): {},
    (_TYPES, "MountTypes"): {},
    (_TYPES, "VFolderUsageMode"): {},
    (_TYPES, "MountPermission"): {"READ_ONLY": "ro", "READ_WRITE": "rw", "RW_DELETE": "wd"},
    (_TYPES, "SessionResult"): {},
    (_TYPES, "SlotTypes"): {},
    (_TYPES, "ServicePortProtocols"): {},
    (_DOCKER, "LabelName"): {},  # keys of commit's extra_labels
}


class EnumShim:
    """Stands for one remote enum class; members become their plain value."""

    def __init__(self, class_name: str, exceptions: dict[str, str]) -> None:
        self.class_name = class_name
        self.exceptions = exceptions

    def __call__(self, value: Any) -> Any:  # by-value pickles: cls(value)
        if not isinstance(value, (str, int)):
            raise ProtocolError(f"enum {self.class_name} value of type {type(value).__name__}")
        return value

    def member(self, name: str) -> str:  # by-name pickles: getattr(cls, name)
        return self.exceptions.get(name, name.lower().replace("_", "-"))


class _StateShim:
    """Base for pickled plain objects: NEWOBJ then BUILD with a state dict."""

    state: dict[str, Any]
    args: tuple[Any, ...]

    def __new__(cls, *args: Any) -> Self:  # NEWOBJ passes the class's __getnewargs__
        inst = super().__new__(cls)
        inst.args, inst.state = args, {}
        return inst

    def __setstate__(self, state: Any) -> None:
        if isinstance(state, tuple) and len(state) == 2:  # (dict state, slot state)
            merged: dict[str, Any] = {}
            for part in state:
                if isinstance(part, dict):
                    merged.update(part)
            state = merged
        if not isinstance(state, dict):
            raise ProtocolError(f"{type(self).__name__}: state of type {type(state).__name__}")
        self.state = state

    def plain(self) -> Any:
        return dict(self.state)


class ImageRefShim(_StateShim):
    def plain(self) -> Any:
        return {str(k).lstrip("_"): v for k, v in self.state.items()}


class ResourceSlotShim(_StateShim):
    def plain(self) -> Any:
        data = self.state.get("data", {})
        if not isinstance(data, dict):
            raise ProtocolError("ResourceSlot without a data mapping")
        return {str(k): (str(v) if isinstance(v, Decimal) else v) for k, v in data.items()}


class PlatformTagSetShim(_StateShim):
    """``ImageRef``'s parsed platform tags (a mapping kept in ``_data``)."""

    def plain(self) -> Any:
        data = self.state.get("_data", {})
        if not isinstance(data, dict):
            raise ProtocolError("PlatformTagSet without a _data mapping")
        return dict(data)


class SlotNameShim(_StateShim):
    def plain(self) -> Any:
        return str(self.state.get("data", self.args[0] if self.args else ""))


class BinarySizeShim(int):
    def plain(self) -> Any:
        return int(self)


def _safe_getattr(obj: Any, name: Any) -> Any:
    if isinstance(obj, EnumShim) and isinstance(name, str):
        return obj.member(name)
    raise ProtocolError("getattr in a pickle is only allowed on enum classes")


def _allowed() -> dict[tuple[str, str], Any]:
    table: dict[tuple[str, str], Any] = {
        ("decimal", "Decimal"): Decimal,
        ("_pydecimal", "Decimal"): Decimal,
        ("builtins", "getattr"): _safe_getattr,
        (_DOCKER, "ImageRef"): ImageRefShim,
        (_DOCKER, "PlatformTagSet"): PlatformTagSetShim,
        (_TYPES, "ResourceSlot"): ResourceSlotShim,
        (_TYPES, "SlotName"): SlotNameShim,
        (_TYPES, "BinarySize"): BinarySizeShim,
    }
    for (module, name), exceptions in _ENUMS.items():
        table[(module, name)] = EnumShim(name, exceptions)
    return table


ALLOWED = _allowed()


class _RestrictedUnpickler(pickle.Unpickler):
    def find_class(self, module: str, name: str) -> Any:
        try:
            return ALLOWED[(module, name)]
        except KeyError:
            raise ProtocolError(
                f"pickled class {module}.{name} is not allowed", module=module, name=name,
            ) from None

    def persistent_load(self, pid: Any) -> Any:
        raise ProtocolError("persistent ids are not allowed in pickles")


def to_plain(value: Any) -> Any:
    """Turn shims (possibly nested in containers) into plain data."""
    if isinstance(value, (_StateShim, BinarySizeShim)):
        return to_plain(value.plain())
    if isinstance(value, EnumShim):
        raise ProtocolError(f"bare enum class {value.class_name} in a pickle")
    if isinstance(value, dict):
        return {to_plain(k): to_plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [to_plain(v) for v in value]
    return value


def restricted_loads(data: bytes) -> Any:
    """Unpickle ``data`` allowing only the Backend.AI classes above; return plain data."""
    try:
        return to_plain(_RestrictedUnpickler(io.BytesIO(data)).load())
    except ProtocolError:
        raise
    except Exception as exc:  # any malformed pickle is a protocol error
        raise ProtocolError(f"bad pickle: {type(exc).__name__}: {exc}") from exc
