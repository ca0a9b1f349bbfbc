"""scripts/lib/junit_skips.py turns a skipped integration, chaos, compat or e2e test into a CI
failure, and (with --require-integration) a tier that ran no test."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

GUARD = Path(__file__).resolve().parents[3] / "scripts" / "lib" / "junit_skips.py"


def junit(*cases: str) -> str:
    return f'<testsuites><testsuite name="pytest">{"".join(cases)}</testsuite></testsuites>'


PASSED_INT = '<testcase classname="tests.integration.x.test_a" name="test_ok"/>'
SKIPPED_INT = (
    '<testcase classname="tests.integration.x.test_a" name="test_s">'
    '<skipped type="pytest.skip" message="no redis"/></testcase>'
)
XFAIL_INT = (
    '<testcase classname="tests.integration.x.test_a" name="test_x">'
    '<skipped type="pytest.xfail" message="known"/></testcase>'
)
PASSED_COMPAT = '<testcase classname="tests.compat.test_c" name="test_ok"/>'
SKIPPED_COMPAT = (
    '<testcase classname="tests.compat.test_c" name="test_s">'
    '<skipped type="pytest.skip" message="no image"/></testcase>'
)
PASSED_CHAOS = '<testcase classname="tests.chaos.test_k" name="test_ok"/>'
PASSED_E2E = '<testcase classname="tests.e2e.test_w" name="test_ok"/>'
SKIPPED_UNIT = (
    '<testcase classname="tests.unit.x.test_b" name="test_s">'
    '<skipped type="pytest.skip" message="linux only"/></testcase>'
)


@pytest.mark.parametrize(
    ("xml", "args", "rc"),
    [
        (junit(PASSED_INT, PASSED_COMPAT, SKIPPED_UNIT), [], 0),
        (junit(PASSED_INT, PASSED_COMPAT, PASSED_CHAOS, PASSED_E2E, XFAIL_INT),
         ["--require-integration"], 0),
        (junit(PASSED_INT, PASSED_COMPAT, PASSED_CHAOS), ["--require-integration"], 1),
        (junit(PASSED_INT, SKIPPED_INT), [], 1),
        (junit(PASSED_INT, SKIPPED_COMPAT), [], 1),
        (junit(PASSED_INT, PASSED_COMPAT, SKIPPED_COMPAT), ["--require-integration"], 1),
        (junit(PASSED_INT, SKIPPED_UNIT), ["--require-integration"], 1),
        (junit(PASSED_COMPAT), ["--require-integration"], 1),
        (junit(SKIPPED_UNIT), ["--require-integration"], 1),
        (junit(SKIPPED_UNIT), [], 0),
    ],
)
def test_guard_exit_code(tmp_path: Path, xml: str, args: list[str], rc: int) -> None:
    path = tmp_path / "junit.xml"
    path.write_text(xml)
    proc = subprocess.run(
        [sys.executable, str(GUARD), str(path), *args],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert proc.returncode == rc, proc.stdout


def test_a_rerun_test_is_listed_counted_once_and_does_not_fail_the_run(tmp_path: Path) -> None:
    path = tmp_path / "junit.xml"  # pytest-rerunfailures records a rerun test case twice
    path.write_text(junit(PASSED_INT, PASSED_INT, PASSED_COMPAT, PASSED_CHAOS, PASSED_E2E))
    proc = subprocess.run([sys.executable, str(GUARD), str(path), "--require-integration"],
                          capture_output=True, text=True, timeout=30, check=False)
    assert proc.returncode == 0, proc.stdout
    assert "RERUN integration test tests.integration.x.test_a::test_ok" in proc.stdout
    assert "integration tests: 1 ran, none skipped, 1 only on a second run" in proc.stdout
    assert "compat tests: 1 ran, none skipped\n" in proc.stdout
