#!/usr/bin/env bash
# Berth's one set-up script: installs and starts everything Berth and its tests need on a
# Debian 12 host (root, no systemd), then builds the local kernel images and the venv.
# Idempotent: every step first checks whether its work is already done, so a second run
# is quick and changes nothing.
#
# Usage: scripts/setup.sh [--test-services] [--no-images] [--quiet]
#   --test-services  also start the local image registry (docker-registry, 127.0.0.1:5000),
#                    install postgresql-15 (the manager's database in tests/e2e; not started
#                    here) and build the test images (berth/bai-compat: Backend.AI for
#                    tests/compat and tests/e2e)
#   --no-images      do not build the kernel (or test) images
#   --quiet          only the one line per step
#
# State (logs, pidfiles, service data, caches) lives in $BERTH_STATE_DIR (default ./var).
# Daemons started here (dockerd only when none answers, redis 127.0.0.1:6379, etcd
# 127.0.0.1:2379, registry 127.0.0.1:5000) keep running after the script ends;
# scripts/stop-services.sh stops exactly those (by pidfile) and nothing else.
# Prometheus is installed but not started: the tests that need it start their own on a free
# port with a scrape config naming the agent they test, and stop it by PID.
set -euo pipefail
. "$(dirname "${BASH_SOURCE[0]}")/lib/common.sh"
. "$BERTH_ROOT/scripts/lib/packages.sh"
. "$BERTH_ROOT/scripts/lib/services.sh"
. "$BERTH_ROOT/scripts/lib/images.sh"
. "$BERTH_ROOT/scripts/lib/venv.sh"

usage() {
    sed -n '/^# Usage/,/^#   --quiet/s/^# \{0,1\}//p' "${BASH_SOURCE[0]}"
    exit "$1"
}

make_state_dirs() {
    local made=0 d
    for d in "$BERTH_STATE_DIR" "$LOG_DIR" "$RUN_DIR" "$DATA_DIR" "$CACHE_DIR" \
        "$BERTH_STATE_DIR/scratch"; do
        [[ -d $d ]] || { mkdir -p "$d"; made=$((made + 1)); }
    done
    step_result "$BERTH_STATE_DIR ($made created)"
}

main() {
    local test_services=0 images=1
    while (( $# )); do
        case $1 in
            --test-services) test_services=1 ;;
            --no-images) images=0 ;;
            --quiet) BERTH_QUIET=1 ;;
            -h|--help) usage 0 ;;
            *) printf 'unknown option: %s\n' "$1" >&2; usage 2 ;;
        esac
        shift
    done
    (( EUID == 0 )) || die "run as root: it installs packages and starts dockerd"
    local start
    start=$(now_ms)
    run_step state make_state_dirs
    run_step packages install_packages
    if (( test_services )); then run_step test-packages install_packages BERTH_TEST_APT_PACKAGES; fi
    run_step dockerd start_dockerd
    run_step redis start_redis
    run_step etcd start_etcd
    if (( test_services )); then run_step registry start_registry; fi
    if (( images )); then
        local name tiers=(kernel)
        (( test_services )) && tiers+=(test)
        for name in $(image_names "${tiers[@]}"); do
            run_step "image:$name" build_image "$name"
        done
    fi
    run_step venv ensure_venv
    run_step watcher-token ensure_watcher_token
    local elapsed=$(( $(now_ms) - start ))
    printf 'setup done in %d.%02ds\n' $((elapsed / 1000)) $((elapsed % 1000 / 10))
}

main "$@"
