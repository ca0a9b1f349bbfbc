"""Fail when an integration, chaos, compat or e2e test was skipped: in CI a skip there is a
failure.

Usage: python junit_skips.py JUNIT_XML [--require-integration]
Reads pytest's JUnit XML; an integration test is one whose classname starts with
"tests.integration", a chaos test (node-level faults) one whose classname starts with
"tests.chaos", a compat test (the real Backend.AI manager code against Berth) one
whose classname starts with "tests.compat", an e2e test (a real Backend.AI manager server)
one whose classname starts with "tests.e2e". xfail is not a skip. Exit 1 with the list of
skipped tests, or when --require-integration is given and any tier ran no test at all.
"""

from __future__ import annotations

import sys
import xml.etree.ElementTree as ET

# tier name -> classname prefix; every test of these tiers must run
TIERS = {"integration": "tests.integration", "chaos": "tests.chaos", "compat": "tests.compat",
         "e2e": "tests.e2e"}


def tier_cases(root: ET.Element, prefix: str) -> list[ET.Element]:
    return [
        case
        for case in root.iter("testcase")
        if case.get("classname", "") == prefix
        or case.get("classname", "").startswith(prefix + ".")
    ]


def skipped(case: ET.Element) -> str | None:
    skip = case.find("skipped")
    if skip is None or skip.get("type") == "pytest.xfail":
        return None
    return skip.get("message", "skipped")


def reruns(cases: list[ET.Element]) -> list[str]:
    """Tests recorded more than once: failed, then run again (pytest-rerunfailures)."""
    seen: dict[str, int] = {}
    for case in cases:
        key = f"{case.get('classname')}::{case.get('name')}"
        seen[key] = seen.get(key, 0) + 1
    return [key for key, n in seen.items() if n > 1]


def main(argv: list[str]) -> int:
    root = ET.parse(argv[1]).getroot()
    rc = 0
    for tier, prefix in TIERS.items():
        cases = tier_cases(root, prefix)
        again = reruns(cases)
        for key in again:
            print(f"RERUN {tier} test {key}: failed once, passed when run again (a flake to fix)")
        unique = {f"{c.get('classname')}::{c.get('name')}": c for c in cases}
        cases = list(unique.values())
        bad = [(c, reason) for c in cases if (reason := skipped(c)) is not None]
        for case, reason in bad:
            print(f"SKIPPED {tier} test {case.get('classname')}::{case.get('name')}: {reason}")
        if bad:
            print(f"{len(bad)} {tier} test(s) skipped: a skip in the {tier} tier is a failure")
            rc = 1
        elif "--require-integration" in argv and not cases:
            print(f"no {tier} test ran: the {tier} tier must run")
            rc = 1
        else:
            print(f"{tier} tests: {len(cases)} ran, none skipped"
                  + (f", {len(again)} only on a second run" if again else ""))
    return rc


if __name__ == "__main__":
    sys.exit(main(sys.argv))
