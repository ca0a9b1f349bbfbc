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

missing_packages() {
    local pkg
    for pkg in "${BERTH_APT_PACKAGES[@]}"; do
        dpkg-query -W -f='${db:Status-Status}' "$pkg" 2>/dev/null | grep -qx installed || echo "$pkg"
    done
}

install_packages() {
    local missing
    mapfile -t missing < <(missing_packages)
    if (( ${#missing[@]} == 0 )); then
        step_result "all ${#BERTH_APT_PACKAGES[@]} present"
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
