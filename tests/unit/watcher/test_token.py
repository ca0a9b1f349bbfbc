from __future__ import annotations

import os
from pathlib import Path

import pytest

from berth.errors import ConfigError
from berth.watcher import generate_token_file, load_token


def test_generated_token_file_is_0600_and_loads(tmp_path: Path) -> None:
    path = tmp_path / "sub" / "watcher.token"
    token = generate_token_file(path)
    assert (path.stat().st_mode & 0o777) == 0o600
    assert load_token(path) == token and len(token) >= 32


@pytest.mark.parametrize("mode", [0o644, 0o640, 0o604, 0o660])
def test_group_or_world_readable_token_is_refused(tmp_path: Path, mode: int) -> None:
    path = tmp_path / "t"
    path.write_text("secret")
    os.chmod(path, mode)
    with pytest.raises(ConfigError, match="0600"):
        load_token(path)


def test_missing_or_empty_token_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ConfigError):
        load_token(tmp_path / "absent")
    empty = tmp_path / "empty"
    empty.write_text("  \n")
    os.chmod(empty, 0o600)
    with pytest.raises(ConfigError, match="empty"):
        load_token(empty)
