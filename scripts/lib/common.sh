# shellcheck shell=bash
# Shared helpers for Berth's scripts: paths, step timing, waiting, pidfiles.
# Sourced, never run. Callers set `set -euo pipefail` themselves.

BERTH_ROOT=${BERTH_ROOT:-$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)}
BERTH_STATE_DIR=${BERTH_STATE_DIR:-$BERTH_ROOT/var}
case $BERTH_STATE_DIR in /*) ;; *) BERTH_STATE_DIR=$BERTH_ROOT/$BERTH_STATE_DIR ;; esac
BERTH_QUIET=${BERTH_QUIET:-0}
export BERTH_ROOT BERTH_STATE_DIR

LOG_DIR=$BERTH_STATE_DIR/logs
RUN_DIR=$BERTH_STATE_DIR/run
DATA_DIR=$BERTH_STATE_DIR/data
CACHE_DIR=$BERTH_STATE_DIR/cache

die() {
    printf 'berth-setup: error: %s\n' "$*" >&2
    exit 1
}

note() {
    [[ $BERTH_QUIET == 1 ]] || printf "        %s\n" "$*" >&2
}

now_ms() {
    date +%s%3N
}

# run_step NAME FUNCTION [ARGS...]: run FUNCTION, print one line "NAME  RESULT  1.23s".
# FUNCTION reports what it did by writing a short word to the file in $STEP_RESULT.
run_step() {
    local name=$1 fn=$2 start rc=0 result
    shift 2
    STEP_RESULT=$(mktemp)
    start=$(now_ms)
    "$fn" "$@" || rc=$?
    result=$(cat "$STEP_RESULT" 2>/dev/null || true)
    rm -f "$STEP_RESULT"
    local elapsed=$(( $(now_ms) - start ))
    if (( rc != 0 )); then
        printf '%-16s FAILED (exit %d) %d.%02ds\n' "$name" "$rc" $((elapsed / 1000)) $((elapsed % 1000 / 10)) >&2
        exit "$rc"
    fi
    printf '%-16s %-44s %d.%02ds\n' "$name" "${result:-ok}" $((elapsed / 1000)) $((elapsed % 1000 / 10))
}

step_result() {
    printf '%s' "$*" > "$STEP_RESULT"
}

# wait_until SECONDS DESCRIPTION COMMAND...: poll COMMAND every 0.1 s until it succeeds.
wait_until() {
    local timeout=$1 what=$2 deadline
    shift 2
    deadline=$(( $(now_ms) + timeout * 1000 ))
    until "$@" >/dev/null 2>&1; do
        if (( $(now_ms) > deadline )); then
            die "$what did not become ready within ${timeout}s"
        fi
        sleep 0.1
    done
}

# pid_alive PIDFILE EXPECTED_COMM: true when the pidfile names a live process running EXPECTED_COMM.
# Checking the command name keeps a recycled PID from being mistaken for our process.
pid_alive() {
    local pidfile=$1 comm=$2 pid
    [[ -s $pidfile ]] || return 1
    pid=$(<"$pidfile")
    [[ $pid =~ ^[0-9]+$ ]] || return 1
    [[ -r /proc/$pid/comm ]] || return 1
    [[ $(</proc/"$pid"/comm) == "$comm"* ]]
}

# port_in_use PORT: true when something listens on 127.0.0.1:PORT (or any address).
port_in_use() {
    ss -Hltn "sport = :$1" 2>/dev/null | grep -q .
}

# start_daemon NAME PIDFILE LOGFILE COMMAND...: start COMMAND detached in its own session.
start_daemon() {
    local name=$1 pidfile=$2 logfile=$3
    shift 3
    mkdir -p "$(dirname "$pidfile")" "$(dirname "$logfile")"
    setsid "$@" </dev/null >>"$logfile" 2>&1 &
    echo $! > "$pidfile"
    note "started $name (pid $!, log $logfile)"
}

# recipe_hash FILE...: short hash over the files' paths (relative to the repo) and contents.
recipe_hash() {
    local f
    printf '%s\n' "$@" | sort | while IFS= read -r f; do
        printf '%s %s\n' "${f#"$BERTH_ROOT"/}" "$(sha256sum < "$f" | cut -d' ' -f1)"
    done | sha256sum | cut -c1-16
}
