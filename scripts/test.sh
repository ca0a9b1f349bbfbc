#!/usr/bin/env bash
# THE test command: set up everything the tests need, run the whole suite (unit and
# integration), and fail when any integration test was skipped or no test ran.
# Usage: scripts/test.sh [PYTEST_ARGS...]   (default: tests)
set -euo pipefail
. "$(dirname "${BASH_SOURCE[0]}")/lib/common.sh"

main() {
    local args=("$@") require=(--require-integration) rc=0
    if (( ${#args[@]} == 0 )); then
        args=(tests)
    else
        require=()   # a chosen subset need not contain integration tests
    fi
    "$BERTH_ROOT/scripts/setup.sh" --test-services
    local junit=$BERTH_STATE_DIR/junit.xml
    rm -f "$junit"
    cd "$BERTH_ROOT"
    echo "static checks: mypy --strict src/berth, ruff check src"
    .venv/bin/python -m mypy src/berth
    .venv/bin/python -m ruff check --quiet src
    # Exit 5 (no tests collected) is a failure too: any non-zero exit fails the run.
    # -rfER: failures, errors and reruns (the real-engine tiers rerun a failed test once,
    # tests/conftest.py) in the summary.
    .venv/bin/python -m pytest -p no:cacheprovider -rfER --junitxml="$junit" "${args[@]}" || rc=$?
    if (( rc != 0 )); then
        echo "pytest failed (exit $rc)" >&2
        exit "$rc"
    fi
    .venv/bin/python "$BERTH_ROOT/scripts/lib/junit_skips.py" "$junit" "${require[@]}"
}

main "$@"
