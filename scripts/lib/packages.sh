# shellcheck shell=bash
# Debian packages Berth needs on the host. Sourced after lib/common.sh.

BERTH_APT_PACKAGES=(
    docker.io            # the container engine (dockerd + CLI)
    redis-server         # events and heartbeats to the manager
    etcd-server          # global config and discovery
    etcd-client          # etcdctl: health probe
    docker-registry      # local image registry for tests (no Docker Hub here)
    prometheus           # metrics scraping in tests (tests start their own)
    mmdebstrap           # Debian root for berth/python
    eatmydata            # faster mmdebstrap (no fsync in the throwaway build root)
    busybox-static       # root of berth/busybox
    e2fsprogs            # mkfs.ext4 for scratch images
    util-linux           # mount, losetup, setsid
    iproute2             # ss, ip
    curl                 # registry probe
    ca-certificates      # PyPI through the TLS proxy
    python3-venv         # bootstrap venv for uv when uv is not installed
)

# Only with --test-services: what tests/e2e runs besides Berth (the Backend.AI manager
# server's own database; the test starts its own cluster on a free port, stopped by PID).
BERTH_TEST_APT_PACKAGES=(
    postgresql-15        # the manager's database in tests/e2e
    chromium             # the real browser of tests/integration/notebook (driven by Playwright)
    openssh-client       # ssh into a kernel's sshd service (tests/integration/notebook)
)

# Usage: missing_packages [ARRAY_NAME]   (default BERTH_APT_PACKAGES)
missing_packages() {
    local -n wanted=${1:-BERTH_APT_PACKAGES}
    local pkg
    for pkg in "${wanted[@]}"; do
        dpkg-query -W -f='${db:Status-Status}' "$pkg" 2>/dev/null | grep -qx installed || echo "$pkg"
    done
}

# Usage: install_packages [ARRAY_NAME]   (default BERTH_APT_PACKAGES)
install_packages() {
    local list=${1:-BERTH_APT_PACKAGES} missing
    local -n all=$list
    mapfile -t missing < <(missing_packages "$list")
    if (( ${#missing[@]} == 0 )); then
        step_result "all ${#all[@]} present"
        return 0
    fi
    note "installing: ${missing[*]}"
    mkdir -p "$LOG_DIR"
    export DEBIAN_FRONTEND=noninteractive
    # "Failed to connect to bus" lines in the log are harmless: there is no systemd here.
    apt-get update >>"$LOG_DIR/apt.log" 2>&1 || die "apt-get update failed; see $LOG_DIR/apt.log"
    apt-get install -y --no-install-recommends "${missing[@]}" >>"$LOG_DIR/apt.log" 2>&1 \
        || die "apt-get install failed; see $LOG_DIR/apt.log"
    step_result "installed ${#missing[@]}: ${missing[*]}"
}
