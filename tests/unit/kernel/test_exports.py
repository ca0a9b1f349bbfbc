"""The kernel and backend packages export exactly their small public API."""

from __future__ import annotations

import importlib

import pytest


@pytest.mark.parametrize("package", ["berth.kernel", "berth.backend"])
def test_every_exported_name_resolves_and_is_public(package: str) -> None:
    module = importlib.import_module(package)
    exported = module.__all__
    assert sorted(exported) == sorted(set(exported))
    for name in exported:
        assert not name.startswith("_")
        assert getattr(module, name).__module__.startswith(package)
