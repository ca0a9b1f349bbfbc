"""Fixtures of the kernel unit tier: a lifecycle over in-memory roles in a tmp root."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from .harness import Harness, build


@pytest.fixture
async def h(tmp_path: Path) -> AsyncIterator[Harness]:
    harness = await build(tmp_path)
    try:
        yield harness
    finally:
        await harness.lc.close()
