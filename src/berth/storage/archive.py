"""Unpacking a tar that came from a kernel (``download_file``) without trusting it.

The agent builds the tar from a kernel's files (``KernelFiles.download_tar``); whoever unpacks
it (the ``berth kernel cp`` command) treats every member as hostile: absolute or ``..`` paths,
links that point outside the destination and anything but files, directories and links are
refused, and every member is checked (ours, then tarfile's ``data`` filter) before the first
byte is written. Placement follows ``docker cp``: an existing directory receives the archived
entry under its own name; any other destination is the entry itself, renamed.
"""

from __future__ import annotations

import io
import posixpath
import tarfile
from pathlib import Path, PurePosixPath

from berth.errors import FileAccessDenied, StorageError

__all__ = ["UnsafeArchiveMember", "extract_archive"]


class UnsafeArchiveMember(FileAccessDenied):
    """A downloaded archive holds a member that would land outside the destination."""


def _escapes(root: str, path: str) -> bool:
    return path != root and not path.startswith(root.rstrip("/") + "/")


def _check_member(member: tarfile.TarInfo, root: str) -> None:
    name = PurePosixPath(member.name)
    problem = None
    if name.is_absolute() or ".." in name.parts:
        problem = "absolute or '..' path"
    elif not (member.isfile() or member.isdir() or member.issym() or member.islnk()):
        problem = "not a file, directory or link"
    elif member.issym():
        target = posixpath.normpath(posixpath.join(root, str(name.parent), member.linkname))
        if posixpath.isabs(member.linkname) or _escapes(root, target):
            problem = f"symbolic link to {member.linkname!r}"
    elif member.islnk() and _escapes(root, posixpath.normpath(
            posixpath.join(root, member.linkname))):
        problem = f"hard link to {member.linkname!r}"
    if problem:
        raise UnsafeArchiveMember(f"refused archive member {member.name!r}: {problem}",
                                  path=member.name, reason=problem)


def _rename_top(member: tarfile.TarInfo, old: str, new: str) -> tarfile.TarInfo:
    def swap(path: str) -> str:
        parts = PurePosixPath(path).parts
        return str(PurePosixPath(new, *parts[1:])) if parts and parts[0] == old else path

    renamed = member.replace(name=swap(member.name), deep=False)
    if member.islnk():
        renamed = renamed.replace(linkname=swap(member.linkname), deep=False)
    return renamed


def _plan_members(tar: tarfile.TarFile, root: Path, rename_to: str | None
                  ) -> list[tarfile.TarInfo]:
    """Every member checked (ours, then tarfile's 'data' filter) before anything is written."""
    members = tar.getmembers()
    tops = {PurePosixPath(m.name).parts[0] for m in members if PurePosixPath(m.name).parts}
    planned = []
    for member in members:
        _check_member(member, str(root))
        if rename_to is not None and len(tops) == 1:
            member = _rename_top(member, next(iter(tops)), rename_to)
        try:
            filtered = tarfile.data_filter(member, str(root))
        except tarfile.FilterError as exc:
            raise UnsafeArchiveMember(f"refused archive member {member.name!r}: {exc}",
                                      path=member.name, reason=str(exc)) from None
        if filtered is not None:
            planned.append(filtered)
    return planned


def extract_archive(data: bytes, dest: Path, *, into_dir: bool = False) -> list[str]:
    """Extract a ``download_file`` tar at ``dest`` (docker cp rules); returns written names.

    An existing directory ``dest`` (or ``into_dir``: the user wrote it with a trailing slash,
    which a ``Path`` does not keep; it is made when missing) receives the archived entry under
    its own name; otherwise the entry is written as ``dest`` itself. A member that would
    escape is refused before anything is written.
    """
    into_dir = into_dir or dest.is_dir()
    root = (dest if into_dir else dest.parent).resolve()
    with tarfile.open(fileobj=io.BytesIO(data), mode="r:") as tar:
        members = _plan_members(tar, root, None if into_dir else dest.name)
        try:
            root.mkdir(parents=True, exist_ok=True)
            tar.extractall(root, members=members, filter="fully_trusted")
        except OSError as exc:
            raise StorageError(f"{dest}: {exc.strerror or exc}", path=str(dest)) from None
    return [m.name for m in members]
