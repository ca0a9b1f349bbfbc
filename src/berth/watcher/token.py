"""The watcher's shared secret: read from a file only its owner may read (no default token)."""

from __future__ import annotations

import os
import secrets
import stat
from pathlib import Path

from berth.errors import ConfigError


def load_token(path: Path) -> str:
    """Return the token in ``path``; refuse a missing, empty or group/world-accessible file."""
    try:
        st = path.stat()
    except OSError as exc:
        raise ConfigError(f"cannot read watcher token file {path}: {exc.strerror}",
                          key_path="watcher.token-file") from exc
    if stat.S_IMODE(st.st_mode) & 0o077:
        raise ConfigError(f"watcher token file {path} has mode {stat.S_IMODE(st.st_mode):04o}; "
                          "it must be 0600", key_path="watcher.token-file")
    token = path.read_text().strip()
    if not token:
        raise ConfigError(f"watcher token file {path} is empty", key_path="watcher.token-file")
    return token


def generate_token_file(path: Path) -> str:
    """Create ``path`` with a fresh random token and mode 0600 (used by the setup script)."""
    token = secrets.token_urlsafe(32)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(token + "\n")
    os.chmod(path, 0o600)
    return token
