"""A second run of scripts/setup.sh is quick and changes nothing."""

from __future__ import annotations

import subprocess
import time
from pathlib import Path
from typing import Any

REPO_ROOT = Path(__file__).resolve().parents[3]
IMAGES = ("berth/busybox:latest", "berth/python:3.11", "berth/python-notebook:3.11",
          "berth/bai-compat:26.9.6")


def image_ids(dk: Any) -> dict[str, str]:
    return {img: dk.run("image", "inspect", "--format", "{{.Id}}", img).strip() for img in IMAGES}


def test_second_setup_run_is_quick_and_rebuilds_nothing(dk: Any) -> None:
    before = image_ids(dk)
    start = time.monotonic()
    proc = subprocess.run(
        [str(REPO_ROOT / "scripts" / "setup.sh"), "--test-services", "--quiet"],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    elapsed = time.monotonic() - start
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert elapsed < 15, f"second setup run took {elapsed:.1f}s:\n{proc.stdout}"
    assert image_ids(dk) == before
    for word in ("up to date", "already answering", "all "):
        assert word in proc.stdout, proc.stdout
    assert "started" not in proc.stdout and "built" not in proc.stdout, proc.stdout
