#!/usr/bin/env bash
# Berth's main job, end to end, on a fresh Debian 12 machine (as root):
#   set up what Berth needs, start the agent with CurveZMQ keys, and drive one kernel
#   through its life over real RPC with the operator CLI — create, show it running, run
#   code in it, reach its HTTP service on its host port, restart it, destroy it — then stop
#   the agent. Everything it writes lives under $BERTH_STATE_DIR/demo (default ./var/demo).
set -euo pipefail
. "$(dirname "${BASH_SOURCE[0]}")/lib/common.sh"

DEMO=$BERTH_STATE_DIR/demo
BERTH=$BERTH_ROOT/.venv/bin/berth
RPC_PORT=${BERTH_DEMO_RPC_PORT:-6011}
AGENT_PID=
KID=

say() { printf '\n\033[1m== %s\033[0m\n' "$*"; }

stop_agent() {
    if [[ -n $KID && -n $AGENT_PID ]]; then
        cli kernel rm "$KID" >/dev/null 2>&1 || true  # never leave the demo's kernel behind
    fi
    if [[ -n $AGENT_PID ]] && kill -0 "$AGENT_PID" 2>/dev/null; then
        kill -TERM "$AGENT_PID"
        wait "$AGENT_PID" 2>/dev/null || true
    fi
}
trap stop_agent EXIT

write_config() {
    mkdir -p "$DEMO/keys"
    [[ -f $DEMO/keys/agent.key_secret ]] || "$BERTH" keys generate --dir "$DEMO/keys" --name agent >/dev/null
    [[ -f $DEMO/keys/manager.key_secret ]] || "$BERTH" keys generate --dir "$DEMO/keys" --name manager >/dev/null
    cat >"$DEMO/agent.toml" <<TOML
[agent]
id = "demo-agent"
rpc-listen-addr = "127.0.0.1:$RPC_PORT"
internal-addr = "127.0.0.1:6003"
rpc-auth-agent-keypair = "keys/agent.key_secret"
rpc-auth-manager-public-key = ["keys/manager.key"]
var-base-path = "lib"
ipc-base-path = "run"
pid-file = "run/agent.pid"

[container]
bind-host = "127.0.0.1"
scratch-root = "scratches"
port-range = [30000, 30100]

[resource]
reserved-cpu = 0
reserved-mem = "512m"

[redis]
addr = "127.0.0.1:6379"

[logging]
file = "agent.log"
TOML
    "$BERTH" config check -f "$DEMO/agent.toml"
}

cli() {
    "$BERTH" --addr "tcp://127.0.0.1:$RPC_PORT" --server-key "$DEMO/keys/agent.key" \
        --client-keypair "$DEMO/keys/manager.key_secret" "$@"
}

main() {
    say "Set up: Docker engine, Redis, etcd, kernel images, virtualenv"
    "$BERTH_ROOT/scripts/setup.sh"
    write_config

    say "Start the agent (RPC with CurveZMQ on 127.0.0.1:$RPC_PORT, metrics on :6003)"
    "$BERTH" start-server -f "$DEMO/agent.toml" 2>>"$DEMO/agent.stderr" &
    AGENT_PID=$!
    for _ in $(seq 1 100); do
        cli agent status >/dev/null 2>&1 && break
        kill -0 "$AGENT_PID" 2>/dev/null || { tail -20 "$DEMO/agent.stderr"; die "agent exited"; }
        sleep 0.2
    done
    cli agent status

    say "Create a kernel from berth/python:3.11 (1 CPU, 512 MiB, 64 MiB /dev/shm)"
    local kid
    KID=$(cli --json kernel create --image berth/python:3.11 --cpu 1 --mem 512m --shmem 64m \
        | "$BERTH_ROOT/.venv/bin/python" -c 'import json,sys; r=json.load(sys.stdin); r=r[0] if isinstance(r, list) else r; print(r["id"])')
    kid=$KID
    cli kernel ls
    cli kernel show "$kid"

    say "Run code in it"
    cli --json kernel exec "$kid" 'import os, sys; print("hello from", sys.version.split()[0], "as uid", os.getuid())' \
        || cli kernel exec "$kid" 'print("hello")'

    say "Start its HTTP service and fetch a page through its host port"
    cli kernel service start "$kid" http-server
    local port
    port=$(cli --json kernel show "$kid" | "$BERTH_ROOT/.venv/bin/python" -c \
        'import json,sys; k=json.load(sys.stdin); print(k["host_ports"]["http-server"][0])')
    curl -fsS -o /dev/null -w "GET http://127.0.0.1:$port/ -> %{http_code}\n" "http://127.0.0.1:$port/"

    say "Metrics endpoint"
    curl -fsS http://127.0.0.1:6003/metrics | grep -E '^backendai_(kernel_count|rpc_requests_total)' | head -5

    say "Restart it (scratch, ports and allocation are kept), then destroy it"
    cli kernel restart "$kid"
    cli kernel rm "$kid"
    KID=
    cli kernel ls

    say "Stop the agent (SIGTERM: graceful; kernels would be left running for the next start)"
    stop_agent
    AGENT_PID=
    echo "done: logs in $DEMO/agent.log"
}

main "$@"
