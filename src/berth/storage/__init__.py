"""Per-kernel scratch storage with quotas, vfolder mounts, and confined file access."""

from berth.storage.archive import UnsafeArchiveMember, extract_archive
from berth.storage.files import (
    DEFAULT_MAX_DOWNLOAD_BYTES,
    DEFAULT_MAX_UPLOAD_BYTES,
    FileEntry,
    KernelFileNotFound,
    KernelFiles,
    list_files_reply,
    locate,
)
from berth.storage.mounter import CommandFailed, MountEntry, Mounter, SystemMounter
from berth.storage.nofollow import FileTooLarge, open_socket
from berth.storage.scratch import (
    SOCKET_NAME,
    ScratchLost,
    ScratchManager,
    ScratchPaths,
    ScratchType,
    ScratchUsage,
    check_kernel_id,
)
from berth.storage.vfolder_hosts import VFolderHostResolver, VolumesConfig
from berth.storage.vfolders import (
    RUNNER,
    MountPerm,
    VFolderMount,
    docker_mounts,
    intrinsic_mounts,
    parse_mounts,
)

__all__ = [
    "DEFAULT_MAX_DOWNLOAD_BYTES",
    "DEFAULT_MAX_UPLOAD_BYTES",
    "RUNNER",
    "SOCKET_NAME",
    "CommandFailed",
    "FileEntry",
    "FileTooLarge",
    "KernelFileNotFound",
    "KernelFiles",
    "MountEntry",
    "MountPerm",
    "Mounter",
    "ScratchLost",
    "ScratchManager",
    "ScratchPaths",
    "ScratchType",
    "ScratchUsage",
    "SystemMounter",
    "UnsafeArchiveMember",
    "VFolderHostResolver",
    "VFolderMount",
    "VolumesConfig",
    "check_kernel_id",
    "docker_mounts",
    "extract_archive",
    "intrinsic_mounts",
    "list_files_reply",
    "locate",
    "open_socket",
    "parse_mounts",
]
