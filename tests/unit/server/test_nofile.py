"""The agent raises its open-file soft limit to the hard limit at start."""

from __future__ import annotations

import resource
from collections.abc import Iterator

import pytest

from berth.daemon import agent


@pytest.fixture
def restore_nofile() -> Iterator[tuple[int, int]]:
    before = resource.getrlimit(resource.RLIMIT_NOFILE)
    yield before
    resource.setrlimit(resource.RLIMIT_NOFILE, before)


def test_soft_limit_is_raised_to_hard(restore_nofile: tuple[int, int]) -> None:
    _, hard = restore_nofile
    low = 256 if hard == resource.RLIM_INFINITY else min(256, hard - 1)
    resource.setrlimit(resource.RLIMIT_NOFILE, (low, hard))
    assert agent.raise_nofile_limit() == (low, hard)
    assert resource.getrlimit(resource.RLIMIT_NOFILE) == (hard, hard)


def test_already_at_hard_is_left_alone(restore_nofile: tuple[int, int]) -> None:
    _, hard = restore_nofile
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    assert agent.raise_nofile_limit() == (hard, hard)


def test_a_refused_raise_keeps_the_soft_limit(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(resource, "getrlimit", lambda _: (1024, 4096))

    def refuse(_: int, __: tuple[int, int]) -> None:
        raise ValueError("not allowed")

    monkeypatch.setattr(resource, "setrlimit", refuse)
    assert agent.raise_nofile_limit() == (1024, 1024)
