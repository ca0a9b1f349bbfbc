"""What a kernel spec may ask of this node: identity and environment (pure, no I/O).

The Manager is trusted to say *what* to run, never to raise a kernel's privileges on the host.
So, at create and again at restart:

* ``uid`` and ``main_gid`` must lie in ``container.kernel-uid-range`` / ``kernel-gid-range``
  (defaults refuse 0, i.e. root); each supplementary gid must be listed in
  ``container.allowed-supplementary-gids`` when that is set, else lie in ``kernel-gid-range``.
* No ``environ`` name may match ``container.environ-deny-list`` (fnmatch patterns such as
  ``LD_*``, matched case-sensitively as the loader and runtimes read them).

Refusals are typed (:class:`~berth.errors.IdentityRefused`,
:class:`~berth.errors.EnvironRefused`) and name the field or variable, so the Manager sees what
to fix. Variables the agent or a plugin sets are not refused: they are overridden (see
:func:`berth.kernel.container_config.kernel_environ`), and those a loaded plugin declares as
its own (``owned_environ``) are dropped from the spec even on kernels the plugin gave nothing.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from fnmatch import fnmatchcase

from berth.config import DEFAULT_ENVIRON_DENY, MAX_ID, ContainerSection
from berth.errors import EnvironRefused, IdentityRefused
from berth.kernel.spec import KernelSpec

__all__ = ["KernelPolicy", "check_kernel_spec", "denied_pattern"]


@dataclass(frozen=True)
class KernelPolicy:
    uid_range: tuple[int, int] = (1, MAX_ID)
    gid_range: tuple[int, int] = (1, MAX_ID)
    supplementary_gids: frozenset[int] | None = None  # None: any gid in gid_range
    environ_deny: tuple[str, ...] = DEFAULT_ENVIRON_DENY
    owned_environ: frozenset[str] = frozenset()  # the loaded plugins' variables

    @classmethod
    def from_config(cls, container: ContainerSection,
                    owned_environ: frozenset[str] = frozenset()) -> KernelPolicy:
        allowed = container.allowed_supplementary_gids
        return cls(uid_range=container.kernel_uid_range, gid_range=container.kernel_gid_range,
                   supplementary_gids=None if allowed is None else frozenset(allowed),
                   environ_deny=tuple(container.environ_deny_list), owned_environ=owned_environ)


def check_kernel_spec(spec: KernelSpec, policy: KernelPolicy) -> None:
    """Raise the first refusal of ``spec`` under ``policy``; return when it may run."""
    _check_identity(spec, policy)
    _check_environ(spec.environ, policy.environ_deny)


def denied_pattern(name: str, patterns: Iterable[str]) -> str | None:
    """The first deny-list pattern ``name`` matches, or None."""
    return next((p for p in patterns if fnmatchcase(name, p)), None)


def _check_identity(spec: KernelSpec, policy: KernelPolicy) -> None:
    if spec.uid is not None:
        _in_range("uid", spec.uid, policy.uid_range, "container.kernel-uid-range")
    if spec.main_gid is not None:
        _in_range("main_gid", spec.main_gid, policy.gid_range, "container.kernel-gid-range")
    for gid in spec.supplementary_gids:
        if policy.supplementary_gids is None:
            _in_range("supplementary_gids", gid, policy.gid_range,
                      "container.kernel-gid-range")
        elif gid not in policy.supplementary_gids:
            raise IdentityRefused(
                "supplementary_gids", gid,
                allowed=f"container.allowed-supplementary-gids {_listing(policy.supplementary_gids)}")


def _in_range(field: str, value: int, bounds: tuple[int, int], key: str) -> None:
    low, high = bounds
    if not low <= value <= high:
        raise IdentityRefused(field, value, allowed=f"{key} [{low}, {high}]")


def _listing(gids: Iterable[int]) -> str:
    return "[" + ", ".join(str(g) for g in sorted(gids)) + "]"


def _check_environ(environ: Mapping[str, str], deny: Sequence[str]) -> None:
    for name in environ:
        pattern = denied_pattern(name, deny)
        if pattern is not None:
            raise EnvironRefused(name, pattern=pattern)
