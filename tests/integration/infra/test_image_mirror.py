"""Image recipes name no Debian mirror: scripts/lib/images.sh reads the host's apt sources."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[3]
LIB = REPO_ROOT / "scripts" / "lib"

DEB822 = """\
# the security archive comes first and must not be taken
Types: deb
URIs: http://security.example.invalid/debian-security
Suites: bookworm-security
Components: main

Types: deb-src
URIs: http://source.example.invalid/debian
Suites: bookworm

Types: deb
URIs: http://off.example.invalid/debian
Suites: bookworm
Enabled: no

Types: deb
URIs: http://main.example.invalid/debian/
Suites: bookworm bookworm-updates
Components: main
"""
ONE_LINE = """\
deb-src http://source.example.invalid/debian bookworm main
deb [signed-by=/k.gpg] http://security.example.invalid/debian-security bookworm-security main
deb [arch=amd64] http://main.example.invalid/debian/ bookworm main
"""


def mirror(*paths: Path) -> subprocess.CompletedProcess[str]:
    """host_debian_mirror [SOURCES_DIR SOURCES_LIST] (none: this host's apt sources)."""
    script = f'. "{LIB}/common.sh"; . "{LIB}/images.sh"; host_debian_mirror "$@"'
    return subprocess.run(["bash", "-c", script, "-", *map(str, paths)],
                          capture_output=True, text=True, timeout=30, check=False)


@pytest.mark.parametrize(("deb822", "one_line"), [(DEB822, ""), ("", ONE_LINE),
                                                   (DEB822, ONE_LINE)])
def test_the_main_archive_of_the_host_sources(tmp_path: Path, deb822: str,
                                              one_line: str) -> None:
    (tmp_path / "d").mkdir()
    if deb822:
        (tmp_path / "d" / "debian.sources").write_text(deb822)
    (tmp_path / "sources.list").write_text(one_line)
    proc = mirror(tmp_path / "d", tmp_path / "sources.list")
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout == "http://main.example.invalid/debian\n"


def test_no_source_is_a_clear_error(tmp_path: Path) -> None:
    proc = mirror(tmp_path / "none", tmp_path / "none.list")
    assert proc.returncode == 1
    assert "no Debian archive found" in proc.stderr


def test_this_host_has_a_mirror_and_no_recipe_names_one() -> None:
    proc = mirror()
    assert proc.returncode == 0 and proc.stdout.startswith("http"), proc.stderr
    for recipe in sorted((REPO_ROOT / "images").glob("*/recipe.conf")):
        assert "://" not in recipe.read_text(), f"{recipe} names a host"
