#!/usr/bin/env bash
# Berth's main job, end to end, on a fresh Debian 12 machine (as root):
#   set up what Berth needs, start the agent with CurveZMQ keys, and drive one kernel
#   through its life over real RPC with the operator CLI — create, show it running, run
#   code in it, reach its HTTP service on its host port, restart it, destroy it — then stop
#   the agent. Everything it writes lives under $BERTH_STATE_DIR/demo (default ./var/demo).
#   Then a data scientist's kernel: berth/python-notebook with JupyterLab started on demand,
#   its URL printed (and fetched once), then destroyed.
#
# Usage: scripts/demo.sh [--notebook]
#   --notebook  only the notebook kernel, and keep it: print the JupyterLab URL and wait
#               until Ctrl-C, which destroys the kernel and stops the agent
set -euo pipefail
. "$(dirname "${BASH_SOURCE[0]}")/lib/common.sh"

DEMO=$BERTH_STATE_DIR/demo
BERTH=$BERTH_ROOT/.venv/bin/berth
RPC_PORT=${BERTH_DEMO_RPC_PORT:-6011}
INTERNAL_PORT=${BERTH_DEMO_INTERNAL_PORT:-6003}
AGENT_PID=
KID=

NOTEBOOK_ONLY=0
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
internal-addr = "127.0.0.1:$INTERNAL_PORT"
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

py() { "$BERTH_ROOT/.venv/bin/python" "$@"; }

# A berth/python-notebook kernel, JupyterLab started with a fresh token, its URL printed.
notebook_kernel() {
    say "A data scientist's kernel: berth/python-notebook:3.11, JupyterLab on its host port"
    KID=$(cli --json kernel create --image berth/python-notebook:3.11 --cpu 1 --mem 2g \
        | py -c 'import json,sys; r=json.load(sys.stdin); r=r[0] if isinstance(r, list) else r; print(r["id"])')
    local kid=$KID token port url
    token=$(py -c 'import secrets; print(secrets.token_hex(16))')
    cli kernel service start "$kid" jupyterlab --env "JUPYTER_TOKEN=$token"
    port=$(cli --json kernel show "$kid" | py -c \
        'import json,sys; k=json.load(sys.stdin); print(k["host_ports"]["jupyterlab"][0])')
    curl -fsS -o /dev/null -w "GET http://127.0.0.1:$port/api/status -> %{http_code}\n" \
        -H "Authorization: token $token" "http://127.0.0.1:$port/api/status"
    url="http://127.0.0.1:$port/lab?token=$token"
    printf '\nJupyterLab: \033[1m%s\033[0m\n' "$url"
    echo "(also: berth kernel service start $kid ttyd | sshd | tensorboard | jupyter)"
    if (( NOTEBOOK_ONLY )); then
        echo "Open it in a browser on this machine (from another one: ssh -L $port:127.0.0.1:$port <this host>)."
        echo "Ctrl-C destroys the kernel and stops the agent."
        while :; do sleep 1; done
    fi
    cli kernel rm "$kid"
    KID=
}

main() {
    case ${1:-} in
        --notebook) NOTEBOOK_ONLY=1 ;;
        "") ;;
        -h|--help) sed -n '/^# Usage/,/^#               until/s/^# \{0,1\}//p' "${BASH_SOURCE[0]}"; exit 0 ;;
        *) printf 'unknown option: %s\n' "$1" >&2; exit 2 ;;
    esac
    say "Set up: Docker engine, Redis, etcd, kernel images, virtualenv"
    "$BERTH_ROOT/scripts/setup.sh"
    write_config

    say "Start the agent (RPC with CurveZMQ on 127.0.0.1:$RPC_PORT, metrics on :$INTERNAL_PORT)"
    # its own session: a Ctrl-C in the terminal reaches the script (whose exit trap destroys
    # the kernel over RPC, then stops the agent), not the agent first
    setsid "$BERTH" start-server -f "$DEMO/agent.toml" 2>>"$DEMO/agent.stderr" &
    AGENT_PID=$!
    for _ in $(seq 1 100); do
        cli agent status >/dev/null 2>&1 && break
        kill -0 "$AGENT_PID" 2>/dev/null || { tail -20 "$DEMO/agent.stderr"; die "agent exited"; }
        sleep 0.2
    done
    cli agent status

    if (( NOTEBOOK_ONLY )); then notebook_kernel; return; fi

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
    curl -fsS "http://127.0.0.1:$INTERNAL_PORT/metrics" | grep -E '^backendai_(kernel_count|rpc_requests_total)' | head -5

    say "Restart it (scratch, ports and allocation are kept), then destroy it"
    cli kernel restart "$kid"
    cli kernel rm "$kid"
    KID=
    cli kernel ls

    notebook_kernel

    say "Stop the agent (SIGTERM: graceful; kernels would be left running for the next start)"
    stop_agent
    AGENT_PID=
    echo "done: logs in $DEMO/agent.log"
}

main "$@"
