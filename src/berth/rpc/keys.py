"""CurveZMQ key files: generation and loading, in ZeroMQ's certificate format.

``rpc-auth-agent-keypair`` names one file holding the public and secret key;
``rpc-auth-manager-public-key`` may name a file, a directory of ``*.key`` files, or
several of either: every public key found is allowed.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from berth.errors import ConfigError
from berth.rpc import transport


@dataclass(frozen=True, slots=True)
class KeyPair:
    """z85-encoded CurveZMQ key pair."""

    public_key: bytes
    secret_key: bytes


def generate_keypair(directory: Path, name: str = "agent") -> tuple[Path, Path]:
    """Write ``directory/name.key`` (public) and ``directory/name.key_secret``."""
    directory.mkdir(parents=True, exist_ok=True)
    return transport.create_certificates(directory, name)


def load_keypair(path: Path) -> KeyPair:
    public, secret = transport.load_certificate(path)
    if secret is None:
        raise ConfigError(f"{path} holds no secret key (use the .key_secret file)",
                          key_path=str(path))
    return KeyPair(public, secret)


def _key_files(path: Path) -> list[Path]:
    if path.is_dir():
        files = sorted(p for p in path.iterdir() if p.suffix == ".key" and p.is_file())
        if not files:
            raise ConfigError(f"no *.key files in {path}", key_path=str(path))
        return files
    return [path]


def load_public_keys(paths: Iterable[Path]) -> frozenset[bytes]:
    """Every public key in the given files and directories; at least one is required."""
    keys = {transport.load_certificate(f)[0] for p in paths for f in _key_files(Path(p))}
    if not keys:
        raise ConfigError("no public keys given", key_path="rpc-auth-manager-public-key")
    return frozenset(keys)


def server_security(agent_keypair: Path,
                    manager_public_keys: Iterable[Path]) -> transport.CurveServerSecurity:
    """Build the server's Curve settings from the two config options' files."""
    pair = load_keypair(agent_keypair)
    return transport.CurveServerSecurity(pair.public_key, pair.secret_key,
                                         load_public_keys(manager_public_keys))
