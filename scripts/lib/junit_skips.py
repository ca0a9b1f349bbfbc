"""Fail when an integration test was skipped: in CI a skip there is a failure.

Usage: python junit_skips.py JUNIT_XML [--require-integration]
Reads pytest's JUnit XML; an integration test is one whose classname starts with
"tests.integration". xfail is not a skip. Exit 1 with the list of skipped tests, or when
--require-integration is given and no integration test ran at all.
"""

from __future__ import annotations

import sys
import xml.etree.ElementTree as ET


def integration_cases(root: ET.Element) -> list[ET.Element]:
    return [
        case
        for case in root.iter("testcase")
        if case.get("classname", "").startswith("tests.integration")
    ]


def skipped(case: ET.Element) -> str | None:
    skip = case.find("skipped")
    if skip is None or skip.get("type") == "pytest.xfail":
        return None
    return skip.get("message", "skipped")


def main(argv: list[str]) -> int:
    root = ET.parse(argv[1]).getroot()
    cases = integration_cases(root)
    bad = [(c, reason) for c in cases if (reason := skipped(c)) is not None]
    for case, reason in bad:
        print(f"SKIPPED integration test {case.get('classname')}::{case.get('name')}: {reason}")
    if bad:
        print(
            f"{len(bad)} integration test(s) skipped: a skip in the integration tier is a failure"
        )
        return 1
    if "--require-integration" in argv and not cases:
        print("no integration test ran: the integration tier must run")
        return 1
    print(f"integration tests: {len(cases)} ran, none skipped")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
