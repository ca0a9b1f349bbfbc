"""The spine holds: every subpackage exports a small public API, other subsystems import only
that front, and no two subsystem folders depend on each other (at import time)."""

from __future__ import annotations

import ast
import importlib
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

import berth

SRC = Path(berth.__file__).parent
PACKAGES = sorted(p.name for p in SRC.iterdir() if (p / "__init__.py").is_file())
# The runner's kernel side is mounted into kernels: stdlib only, it imports no other subsystem.
KERNEL_SIDE = SRC / "runner" / "kernel_side"


def _package(path: Path) -> str | None:
    parts = path.relative_to(SRC).parts
    return parts[0] if len(parts) > 1 else None


def _imports(tree: ast.AST, *, runtime_only: bool) -> Iterator[ast.ImportFrom | ast.Import]:
    """Every import in ``tree``; with ``runtime_only``, those under ``if TYPE_CHECKING:`` and
    inside functions (lazy imports) are left out."""
    def walk(nodes: list[ast.stmt]) -> Iterator[ast.ImportFrom | ast.Import]:
        for node in nodes:
            if isinstance(node, (ast.Import, ast.ImportFrom)):
                yield node
            elif isinstance(node, ast.If):
                if runtime_only and "TYPE_CHECKING" in ast.unparse(node.test):
                    continue
                yield from walk(node.body)
                yield from walk(node.orelse)
            elif isinstance(node, ast.Try):
                yield from walk(node.body)
                for handler in node.handlers:
                    yield from walk(handler.body)
            elif not runtime_only and isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef,
                                                        ast.ClassDef)):
                yield from (n for n in ast.walk(node)
                            if isinstance(n, (ast.Import, ast.ImportFrom)))
    assert isinstance(tree, ast.Module)
    yield from walk(tree.body)


def _modules_named(node: ast.ImportFrom | ast.Import) -> list[str]:
    if isinstance(node, ast.Import):
        return [a.name for a in node.names]
    return [node.module] if node.module and not node.level else []


def _sources() -> Iterator[tuple[Path, str | None, ast.AST]]:
    for path in sorted(SRC.rglob("*.py")):
        if path.is_relative_to(KERNEL_SIDE):
            continue
        yield path, _package(path), ast.parse(path.read_text())


@pytest.mark.parametrize("package", [f"berth.{p}" for p in PACKAGES])
def test_every_exported_name_resolves_and_is_public(package: str) -> None:
    module = importlib.import_module(package)
    exported = module.__all__
    assert exported, f"{package} exports nothing"
    assert sorted(exported) == sorted(set(exported))
    for name in exported:
        assert not name.startswith("_")
        value = getattr(module, name)
        owner = getattr(value, "__module__", None)
        if owner is not None and isinstance(value, type | type(len) | type(_package)):
            assert owner.startswith(package), f"{package}.{name} comes from {owner}"


def test_no_module_imports_another_packages_insides() -> None:
    offences = []
    for path, own, tree in _sources():
        for node in _imports(tree, runtime_only=False):
            for name in _modules_named(node):
                parts = name.split(".")
                if (len(parts) > 2 and parts[0] == "berth" and parts[1] in PACKAGES
                        and parts[1] != own):
                    offences.append(f"{path.relative_to(SRC)}: {name}")
    assert offences == []


def test_the_runners_kernel_side_imports_only_the_stdlib_and_itself() -> None:
    # It runs on the kernel image's Python, where Berth is not installed, under any package name.
    offences = []
    for path in sorted(KERNEL_SIDE.glob("*.py")):
        for node in _imports(ast.parse(path.read_text()), runtime_only=False):
            for name in _modules_named(node):
                if name.split(".")[0] not in sys.stdlib_module_names:
                    offences.append(f"{path.name}: {name}")
    assert offences == []


def test_no_two_subsystem_folders_import_each_other() -> None:
    edges: dict[str, set[str]] = {p: set() for p in PACKAGES}
    for _path, own, tree in _sources():
        if own is None:
            continue
        for node in _imports(tree, runtime_only=True):
            for name in _modules_named(node):
                parts = name.split(".")
                if len(parts) > 1 and parts[0] == "berth" and parts[1] in edges and parts[1] != own:
                    edges[own].add(parts[1])
    cycles = []

    def visit(node: str, trail: list[str]) -> None:
        if node in trail:
            cycles.append(trail[trail.index(node):] + [node])
            return
        for nxt in sorted(edges[node]):
            visit(nxt, [*trail, node])

    for package in PACKAGES:
        visit(package, [])
    assert cycles == []
