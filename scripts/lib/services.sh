# shellcheck shell=bash
# Starting the daemons Berth needs when they do not answer already. Sourced after
# lib/common.sh. Each daemon we start gets a pidfile, log and data dir named after the
# daemon and its port (run/etcd-2379.pid, logs/etcd-2379.log, data/etcd-2379), so runs with
# other ports never share them;
# scripts/stop-services.sh stops exactly those and nothing else.

REDIS_PORT=${BERTH_REDIS_PORT:-6379}
ETCD_PORT=${BERTH_ETCD_PORT:-2379}
ETCD_PEER_PORT=${BERTH_ETCD_PEER_PORT:-2380}
REGISTRY_PORT=${BERTH_REGISTRY_PORT:-5000}
DOCKERD_WAIT_S=${BERTH_DOCKERD_WAIT_S:-60}
SERVICE_WAIT_S=${BERTH_SERVICE_WAIT_S:-30}

docker_answers() { timeout 10 docker info >/dev/null 2>&1; }
redis_answers() { [[ $(timeout 3 redis-cli -h 127.0.0.1 -p "$REDIS_PORT" ping 2>/dev/null) == PONG ]]; }
etcd_answers() {
    ETCDCTL_API=3 timeout 5 etcdctl --endpoints="127.0.0.1:$ETCD_PORT" \
        --dial-timeout=1s --command-timeout=2s endpoint health >/dev/null 2>&1
}
registry_answers() { curl -sf -m 3 "http://127.0.0.1:$REGISTRY_PORT/v2/" >/dev/null 2>&1; }

# refuse_busy_port NAME PORT: a port held by something that does not answer is an error,
# never a reason to kill it.
refuse_busy_port() {
    if port_in_use "$2"; then
        die "port $2 is in use but $1 does not answer there; stop that process or free the port"
    fi
}

start_dockerd() {
    if docker_answers; then
        step_result "already answering"
        return 0
    fi
    if pid_alive "$RUN_DIR/dockerd.pid" dockerd; then
        note "dockerd (pid $(<"$RUN_DIR/dockerd.pid")) is starting; waiting"
    else
        [[ -S /var/run/docker.sock ]] && pgrep -x dockerd >/dev/null \
            && die "a dockerd not started by Berth is running but does not answer; see its log"
        start_daemon dockerd "$RUN_DIR/dockerd.pid" "$LOG_DIR/dockerd.log" dockerd
    fi
    wait_until "$DOCKERD_WAIT_S" "dockerd (log: $LOG_DIR/dockerd.log)" docker_answers
    step_result "started (pid $(<"$RUN_DIR/dockerd.pid"))"
}

start_redis() {
    if redis_answers; then
        step_result "already answering on :$REDIS_PORT"
        return 0
    fi
    refuse_busy_port redis "$REDIS_PORT"
    mkdir -p "$DATA_DIR/redis-$REDIS_PORT"
    start_daemon redis "$RUN_DIR/redis-$REDIS_PORT.pid" "$LOG_DIR/redis-$REDIS_PORT.log" \
        redis-server --bind 127.0.0.1 --port "$REDIS_PORT" --save '' --appendonly no \
        --dir "$DATA_DIR/redis-$REDIS_PORT" --daemonize no
    wait_until "$SERVICE_WAIT_S" "redis on 127.0.0.1:$REDIS_PORT (log: $LOG_DIR/redis-$REDIS_PORT.log)" redis_answers
    step_result "started on :$REDIS_PORT (pid $(<"$RUN_DIR/redis-$REDIS_PORT.pid"))"
}

start_etcd() {
    if etcd_answers; then
        step_result "already answering on :$ETCD_PORT"
        return 0
    fi
    refuse_busy_port etcd "$ETCD_PORT"
    refuse_busy_port etcd-peer "$ETCD_PEER_PORT"
    mkdir -p "$DATA_DIR/etcd-$ETCD_PORT"
    chmod 0700 "$DATA_DIR/etcd-$ETCD_PORT"
    start_daemon etcd "$RUN_DIR/etcd-$ETCD_PORT.pid" "$LOG_DIR/etcd-$ETCD_PORT.log" \
        etcd --name berth --data-dir "$DATA_DIR/etcd-$ETCD_PORT" \
        --listen-client-urls "http://127.0.0.1:$ETCD_PORT" \
        --advertise-client-urls "http://127.0.0.1:$ETCD_PORT" \
        --listen-peer-urls "http://127.0.0.1:$ETCD_PEER_PORT" \
        --initial-advertise-peer-urls "http://127.0.0.1:$ETCD_PEER_PORT" \
        --initial-cluster "berth=http://127.0.0.1:$ETCD_PEER_PORT"
    wait_until "$SERVICE_WAIT_S" "etcd on 127.0.0.1:$ETCD_PORT (log: $LOG_DIR/etcd-$ETCD_PORT.log)" etcd_answers
    step_result "started on :$ETCD_PORT (pid $(<"$RUN_DIR/etcd-$ETCD_PORT.pid"))"
}

write_registry_config() {
    local dir=$DATA_DIR/registry-$REGISTRY_PORT
    local conf=$dir/config.yml
    mkdir -p "$dir/storage"
    # The packaged /etc/docker/registry/config.yml wants htpasswd auth; ours has none.
    cat > "$conf.new" <<YAML
version: 0.1
log: {level: warn}
storage:
  filesystem: {rootdirectory: $dir/storage}
  delete: {enabled: true}
http: {addr: 127.0.0.1:$REGISTRY_PORT}
YAML
    mv "$conf.new" "$conf"
    echo "$conf"
}

start_registry() {
    if registry_answers; then
        step_result "already answering on :$REGISTRY_PORT"
        return 0
    fi
    refuse_busy_port docker-registry "$REGISTRY_PORT"
    local conf
    conf=$(write_registry_config)
    start_daemon docker-registry "$RUN_DIR/registry-$REGISTRY_PORT.pid" "$LOG_DIR/registry-$REGISTRY_PORT.log" \
        docker-registry serve "$conf"
    wait_until "$SERVICE_WAIT_S" "docker-registry on 127.0.0.1:$REGISTRY_PORT (log: $LOG_DIR/registry-$REGISTRY_PORT.log)" \
        registry_answers
    step_result "started on :$REGISTRY_PORT (pid $(<"$RUN_DIR/registry-$REGISTRY_PORT.pid"))"
}
