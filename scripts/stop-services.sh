#!/usr/bin/env bash
# Stop the daemons that scripts/setup.sh started, by their pidfiles in $BERTH_STATE_DIR/run
# (NAME.pid or NAME-PORT.pid). A daemon someone else started (e.g. a dockerd that was
# already running) has no pidfile there and is left alone; so is a recycled PID whose
# process is no longer the expected program.
# Usage: scripts/stop-services.sh [NAME...]   (names: registry etcd redis dockerd; default all)
set -euo pipefail
. "$(dirname "${BASH_SOURCE[0]}")/lib/common.sh"

declare -A COMM=([registry]=docker-registry [etcd]=etcd [redis]=redis-server [dockerd]=dockerd)

stop_pidfile() {
    local pidfile=$1 comm=$2 pid waited=0
    if ! pid_alive "$pidfile" "$comm"; then
        rm -f "$pidfile"
        return 0
    fi
    pid=$(<"$pidfile")
    kill -TERM "$pid"
    while kill -0 "$pid" 2>/dev/null && (( waited < 300 )); do
        sleep 0.1
        waited=$((waited + 1))
    done
    kill -0 "$pid" 2>/dev/null && die "$comm (pid $pid) did not exit within 30s of SIGTERM"
    rm -f "$pidfile"
    printf 'stopped %s (pid %s)\n' "$(basename "$pidfile" .pid)" "$pid"
}

main() {
    local names=("$@") name pidfile
    (( ${#names[@]} )) || names=(registry etcd redis dockerd)
    for name in "${names[@]}"; do
        [[ -n ${COMM[$name]:-} ]] || die "unknown service $name"
        for pidfile in "$RUN_DIR/$name.pid" "$RUN_DIR/$name"-*.pid; do
            [[ -e $pidfile ]] && stop_pidfile "$pidfile" "${COMM[$name]}"
        done
    done
    return 0
}

main "$@"
