"""Shared test configuration: tiers are decided by directory."""

from __future__ import annotations

import pytest

# Import hypothesis here, in the main thread, before any test starts worker threads:
# CPython 3.11.7 can fail compiling (assertion-rewriting) a module in one thread while another
# thread compiles ("AST constructor recursion depth mismatch", gh-106905), and hypothesis is
# otherwise first imported lazily by its pytest plugin from whatever thread touches it.
import hypothesis  # noqa: F401


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    for item in items:
        path = str(item.fspath)
        if "/tests/integration/" in path:
            item.add_marker(pytest.mark.integration)
        elif "/tests/compat/" in path:
            item.add_marker(pytest.mark.compat)
        elif "/tests/chaos/" in path:
            item.add_marker(pytest.mark.chaos)
        elif "/tests/e2e/" in path:
            item.add_marker(pytest.mark.e2e)
