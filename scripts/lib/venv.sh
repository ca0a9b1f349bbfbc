# shellcheck shell=bash
# The project's virtualenv (.venv) with Berth installed editable plus its test extras.
# Sourced after lib/common.sh. Reinstalls only when pyproject.toml changed or .venv is missing.

VENV_DIR=$BERTH_ROOT/.venv
VENV_STAMP=$VENV_DIR/.berth-pyproject.sha256
export SSL_CERT_FILE=${SSL_CERT_FILE:-/etc/ssl/certs/ca-certificates.crt}  # PyPI is behind a TLS proxy
export UV_PYTHON_DOWNLOADS=never

# A python3 >= 3.11: the first one on PATH, else Debian's.
find_python() {
    local py
    for py in "$(command -v python3 || true)" /usr/bin/python3.11 /usr/bin/python3; do
        [[ -n $py && -x $py ]] || continue
        if "$py" -c 'import sys; sys.exit(sys.version_info < (3, 11))' 2>/dev/null; then
            echo "$py"
            return 0
        fi
    done
    die "no python3 >= 3.11 found"
}

# uv from PATH, else installed once with pip into a tool venv under the state dir.
find_uv() {
    local tool=$BERTH_STATE_DIR/tools/uv
    if command -v uv >/dev/null && uv --version >/dev/null 2>&1; then
        command -v uv
        return 0
    fi
    if [[ ! -x $tool/bin/uv ]]; then
        note "installing uv into $tool"
        "$(find_python)" -m venv "$tool" || die "python3 -m venv failed (is python3-venv installed?)"
        "$tool/bin/pip" install --quiet uv >>"$LOG_DIR/venv.log" 2>&1 \
            || die "pip install uv failed; see $LOG_DIR/venv.log"
    fi
    echo "$tool/bin/uv"
}

ensure_venv() {
    local want uv created=""
    want=$(recipe_hash "$BERTH_ROOT/pyproject.toml")
    if [[ -x $VENV_DIR/bin/python && -f $VENV_STAMP && $(<"$VENV_STAMP") == "$want" ]]; then
        step_result "up to date"
        return 0
    fi
    mkdir -p "$LOG_DIR"
    uv=$(find_uv)
    if [[ ! -x $VENV_DIR/bin/python ]]; then
        "$uv" venv --python "$(find_python)" "$VENV_DIR" >>"$LOG_DIR/venv.log" 2>&1 \
            || die "uv venv failed; see $LOG_DIR/venv.log"
        created="created, "
    fi
    (cd "$BERTH_ROOT" && "$uv" pip install --python "$VENV_DIR/bin/python" -e '.[test]') \
        >>"$LOG_DIR/venv.log" 2>&1 || die "uv pip install failed; see $LOG_DIR/venv.log"
    echo "$want" > "$VENV_STAMP"
    step_result "${created}installed berth[test]"
}

# The watcher has no default token: one is generated here, once, readable by root alone.
ensure_watcher_token() {
    local token=$BERTH_STATE_DIR/watcher.token
    if [[ -f $token ]]; then
        step_result "present ($token)"
        return 0
    fi
    "$VENV_DIR/bin/python" -c 'import sys; from pathlib import Path; from berth.watcher.token import generate_token_file; generate_token_file(Path(sys.argv[1]))' "$token"
    step_result "generated $token (0600)"
}
