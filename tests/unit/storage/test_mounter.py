from __future__ import annotations

from pathlib import Path

from berth.storage.mounter import MountEntry, mounts_under, parse_mountinfo

MOUNTINFO = """\
22 1 254:0 / / rw,relatime shared:1 - ext4 /dev/vda rw
40 22 0:35 / /var/lib/berth/scratch/k1 rw,nosuid,nodev - tmpfs tmpfs rw,size=65536k
41 22 7:0 / /var/lib/berth/scratch/k\\0402 rw,nosuid - ext4 /dev/loop0 rw
42 41 0:36 / /var/lib/berth/scratch/k\\0402/work/sub rw - tmpfs tmpfs rw
43 22 0:37 / /var/lib/berth/scratch-other/k3 rw - tmpfs tmpfs rw
garbage line without separator
"""


def test_parse_mountinfo_unescapes_and_skips_garbage() -> None:
    entries = parse_mountinfo(MOUNTINFO)
    assert len(entries) == 5
    assert entries[1] == MountEntry(Path("/var/lib/berth/scratch/k1"), "tmpfs", "tmpfs")
    assert entries[2].mount_point == Path("/var/lib/berth/scratch/k 2")
    assert entries[2].source == "/dev/loop0"


def test_mounts_under_is_deepest_first_and_respects_component_boundaries() -> None:
    entries = parse_mountinfo(MOUNTINFO)
    root = Path("/var/lib/berth/scratch")
    under = mounts_under(entries, root)
    assert under[0] == Path("/var/lib/berth/scratch/k 2/work/sub")
    assert set(under[1:]) == {Path("/var/lib/berth/scratch/k1"),
                              Path("/var/lib/berth/scratch/k 2")}
    assert Path("/var/lib/berth/scratch-other/k3") not in under
    assert mounts_under(entries, Path("/var/lib/berth/scratch/k1")) == [
        Path("/var/lib/berth/scratch/k1")]
