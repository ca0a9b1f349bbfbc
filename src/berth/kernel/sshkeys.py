"""The session's SSH keypair, placed for the kernel user (Backend.AI's places).

The Manager sends a per-session keypair in ``internal_data.ssh_keypair`` ``{public_key,
private_key}``. Backend.AI's agent writes it into the kernel's work directory:
``/home/work/.ssh/authorized_keys`` (the public key: whoever holds the session's private key
logs in to the kernel's ``sshd`` service), ``/home/work/.ssh/id_rsa`` and
``/home/work/id_container`` (the private key, which the user downloads to connect), all
owned by the kernel user, mode 0600 in a 0700 ``.ssh``; nothing is written when a vfolder is
mounted at ``/home/work/.ssh`` (the user's own keys win).

The work directory is fresh when a kernel is created; every name is still opened without
following links (``storage.nofollow``). The private key is not kept in the ledger
(``KernelSpec`` drops it when dumped): a restart keeps the scratch and so the files.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

from berth.errors import InvalidArgument
from berth.storage import nofollow

__all__ = ["SSH_MOUNT_PATH", "session_keypair", "write_session_keys"]

SSH_MOUNT_PATH = "/home/work/.ssh"


def session_keypair(internal_data: Mapping[str, Any] | None) -> tuple[str, str] | None:
    """``(public_key, private_key)`` from the Manager's ``internal_data``, or None."""
    raw = (internal_data or {}).get("ssh_keypair")
    if raw is None:
        return None
    if not isinstance(raw, Mapping):
        raise InvalidArgument("internal_data.ssh_keypair must be a mapping",
                              field="internal_data.ssh_keypair")
    public, private = raw.get("public_key"), raw.get("private_key")
    if not isinstance(public, str) or not isinstance(private, str) or not public.strip() \
            or not private.strip():
        raise InvalidArgument("internal_data.ssh_keypair needs public_key and private_key",
                              field="internal_data.ssh_keypair")
    return _with_newline(public), _with_newline(private)


def write_session_keys(kernel_dir: Path, work_rel: Sequence[str], keypair: tuple[str, str],
                       *, uid: int, gid: int, mount_paths: Iterable[str] = ()) -> bool:
    """Write the keypair below the work directory (``work_rel``, relative to ``kernel_dir``).
    False (nothing written) when a mount covers ``/home/work/.ssh``."""
    if any(p.rstrip("/") == SSH_MOUNT_PATH for p in mount_paths):
        return False
    public, private = keypair
    work = tuple(work_rel)
    with nofollow.open_dir(kernel_dir, work) as work_fd:
        with contextlib.suppress(FileExistsError):
            os.mkdir(".ssh", 0o700, dir_fd=work_fd)
        with nofollow.open_dir(work_fd, (".ssh",)) as ssh_fd:
            os.fchown(ssh_fd, uid, gid)
            os.fchmod(ssh_fd, 0o700)
    for rel, data in (((*work, ".ssh", "authorized_keys"), public),
                      ((*work, ".ssh", "id_rsa"), private), ((*work, "id_container"), private)):
        # the kernel's own files: gone with its container, so not fsynced
        nofollow.write_file(kernel_dir, rel, data.encode(), mode=0o600, uid=uid, gid=gid,
                            durable=False)
    return True


def _with_newline(text: str) -> str:
    # OpenSSH refuses a key file whose last line has no newline.
    return text if text.endswith("\n") else text + "\n"
