#!/usr/bin/env bash
# Stop the daemons that scripts/setup.sh started (by their pidfiles in $BERTH_STATE_DIR/run).
# A daemon someone else started (e.g. a dockerd that was already running) is left alone.
# Usage: scripts/stop-services.sh [NAME...]   (names: registry etcd redis dockerd; default all)
set -euo pipefail
. "$(dirname "${BASH_SOURCE[0]}")/lib/common.sh"

declare -A COMM=([registry]=docker-registry [etcd]=etcd [redis]=redis-server [dockerd]=dockerd)

stop_one() {
    local name=$1 pidfile=$RUN_DIR/$1.pid pid waited=0
    if ! pid_alive "$pidfile" "${COMM[$name]}"; then
        rm -f "$pidfile"
        return 0
    fi
    pid=$(<"$pidfile")
    kill -TERM "$pid"
    while kill -0 "$pid" 2>/dev/null && (( waited < 300 )); do
        sleep 0.1
        waited=$((waited + 1))
    done
    kill -0 "$pid" 2>/dev/null && die "$name (pid $pid) did not exit within 30s of SIGTERM"
    rm -f "$pidfile"
    printf 'stopped %s (pid %s)\n' "$name" "$pid"
}

main() {
    local names=("$@") name
    (( ${#names[@]} )) || names=(registry etcd redis dockerd)
    for name in "${names[@]}"; do
        [[ -n ${COMM[$name]:-} ]] || die "unknown service $name"
        stop_one "$name"
    done
}

main "$@"
