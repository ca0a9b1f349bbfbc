"""A kernel's ledger entry and resource.txt, byte for byte as Berth has always written them.

The allocation is a typed record inside the kernel; its JSON is made only at the ledger, the RPC
reply, the events and resource.txt. These bytes were captured (fake backend, this harness) while
the kernel still held the allocation as a JSON dict: a change of key, order or amount format in
the record's wire form shows here. The container id, creation time and user ids vary per run and
are put in their place.
"""

from __future__ import annotations

import os
from pathlib import Path

from berth.kernel.ledger import LEDGER_FILENAME

from .harness import Harness, build, kernel_config

KID = "0f0e0d0c-0b0a-4908-8706-050403020100"

LEDGER = (
    '{"agent_id": "ag-unit", "allocation": {"devices": {"cpu": {"cpu": {"0": "1"}}, '
    '"mem": {"mem": {"root": "268435456"}}}, '
    '"kernel_id": "0f0e0d0c-0b0a-4908-8706-050403020100", "requested": {"cpu": "1", '
    '"mem": "268435456"}}, "container_id": "CID", "created_at": CREATED, '
    '"extra": {"image_labels": {"ai.backend.runtime-type": "app", '
    '"ai.backend.service-ports": "web:http:8080"}, "oom_kills_survived": 0, '
    '"service_ports": [{"container_ports": [8080], "host_ports": [30000], '
    '"is_inference": false, "name": "web", "protocol": "http"}, {"container_ports": [8081], '
    '"host_ports": [30001], "is_inference": false, "name": "8081", "protocol": "preopen"}], '
    '"tls_ports": {}}, "gid": @GID@, "host_ports": {"8081": [30001], "web": [30000]}, '
    '"image_id": "sha256:d0e428394c8821ca71a6ff1730503202fe0ecf209e1f4476ac75463b4702215e", '
    '"kernel_id": "0f0e0d0c-0b0a-4908-8706-050403020100", "session_id": "sess", '
    '"spec": {"bootstrap_script": null, "cluster_hostname": null, "cluster_idx": 1, '
    '"cluster_info": {"cluster_ssh_port_mapping": null, "mode": "single-node", '
    '"network_config": {}, "replicas": {}, "size": 1}, "cluster_role": "main", "environ": {}, '
    '"image": {"architecture": null, "auto_pull": "digest", '
    '"canonical": "berth/busybox:latest", "digest": null, "is_local": true, "labels": {}, '
    '"project": null, "registry": {}, "repo_digest": null}, "internal_data": null, '
    '"kernel_id": "0f0e0d0c-0b0a-4908-8706-050403020100", "local_rank": 0, "main_gid": null, '
    '"mounts": [], "owner_project_id": null, "owner_user_id": null, "preopen_ports": [8081], '
    '"resource_opts": {}, "resource_slots": {"cpu": "1", "mem": "268435456"}, '
    '"session_id": "sess", "session_type": "interactive", "startup_command": null, '
    '"supplementary_gids": [], "uid": null}, "state": "RUNNING", "uid": @UID@, "version": 1}'
)

RESOURCE_TXT = 'SLOTS={"cpu": "1", "mem": "268435456"}\nALLOCATION={"devices": {"cpu": {"cpu": {"0": "1"}}, "mem": {"mem": {"root": "268435456"}}}, "kernel_id": "0f0e0d0c-0b0a-4908-8706-050403020100", "requested": {"cpu": "1", "mem": "268435456"}}\n'


def expected(created_at: float, container_id: str) -> bytes:
    return (LEDGER.replace("CID", container_id).replace("CREATED", repr(created_at))
            .replace("@UID@", str(os.getuid())).replace("@GID@", str(os.getgid())).encode())


async def test_the_ledger_entry_and_resource_txt_are_the_bytes_written_before(h: Harness) -> None:
    await h.lc.create(kernel_config(preopen_ports=[8081]), KID, "sess")
    kernel = h.registry.get(KID)
    assert kernel.container_id is not None
    raw = (h.scratch.root / KID / "config" / LEDGER_FILENAME).read_bytes()
    assert raw == expected(kernel.created_at, kernel.container_id)
    resource_txt = (h.lc.layouts[KID].config_dir / "resource.txt").read_text()
    assert resource_txt == RESOURCE_TXT


async def test_an_adopted_kernel_rewrites_the_same_ledger_bytes(tmp_path: Path) -> None:
    old = await build(tmp_path)
    await old.lc.create(kernel_config(preopen_ports=[8081]), KID, "sess")
    path = old.scratch.root / KID / "config" / LEDGER_FILENAME
    before = path.read_bytes()
    await old.lc.close()
    new = await build(tmp_path, old.backend)
    try:
        report = await new.reconciler().at_start()
        assert list(report.adopted) == [KID]
        path.unlink()
        await new.lc._write_ledger(new.registry.get(KID))  # record → JSON → bytes, after the reload
        assert path.read_bytes() == before
    finally:
        await new.lc.close()
