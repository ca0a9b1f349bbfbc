from __future__ import annotations

import os
from pathlib import Path

from click.testing import CliRunner

from berth.cli.watcher import watcher_group


def test_watcher_refuses_token_file_with_loose_permissions(tmp_path: Path) -> None:
    tok = tmp_path / "token"
    tok.write_text("secret")
    os.chmod(tok, 0o644)
    res = CliRunner().invoke(watcher_group, ["--token-file", str(tok), "--no-autostart"])
    assert res.exit_code != 0 and "0600" in res.output


def test_watcher_requires_token_file() -> None:
    res = CliRunner().invoke(watcher_group, [])
    assert res.exit_code != 0 and "--token-file" in res.output
