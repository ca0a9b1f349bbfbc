"""Shared test configuration: tiers are decided by directory."""

from __future__ import annotations

import os

# Import hypothesis here, in the main thread, before any test starts worker threads:
# CPython 3.11.7 can fail compiling (assertion-rewriting) a module in one thread while another
# thread compiles ("AST constructor recursion depth mismatch", gh-106905), and hypothesis is
# otherwise first imported lazily by its pytest plugin from whatever thread touches it.
import hypothesis  # noqa: F401
import pytest

# The tiers that run the real Docker engine, Redis, etcd and a real manager share a 2-core
# machine with everything else in the run; a test there that fails is run once more (never a
# unit test), and scripts/lib/junit_skips.py lists every such rerun at the end of the run, as a
# flake to fix. BERTH_TEST_RERUNS=0 turns it off.
RERUNS = int(os.environ.get("BERTH_TEST_RERUNS", "1"))
TIERS = {"/tests/integration/": pytest.mark.integration, "/tests/compat/": pytest.mark.compat,
         "/tests/chaos/": pytest.mark.chaos, "/tests/e2e/": pytest.mark.e2e}


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    for item in items:
        path = str(item.fspath)
        for folder, mark in TIERS.items():
            if folder in path:
                item.add_marker(mark)
                if RERUNS > 0:
                    item.add_marker(pytest.mark.flaky(reruns=RERUNS, reruns_delay=2))
