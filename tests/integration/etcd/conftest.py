"""A real etcd per module on free loopback ports in a tmp data dir, killed by PID after."""

from __future__ import annotations

import shutil
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture(scope="module")
def etcd_addr(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    exe = shutil.which("etcd")
    if exe is None:
        pytest.fail("etcd is not installed (apt-get install etcd-server)")
    work: Path = tmp_path_factory.mktemp("etcd")
    client, peer = free_port(), free_port()
    curl, purl = f"http://127.0.0.1:{client}", f"http://127.0.0.1:{peer}"
    with open(work / "etcd.log", "wb") as logf:
        proc = subprocess.Popen(
            [exe, "--name", "berth-test", "--data-dir", str(work / "data"),
             "--listen-client-urls", curl, "--advertise-client-urls", curl,
             "--listen-peer-urls", purl, "--initial-advertise-peer-urls", purl,
             "--initial-cluster", f"berth-test={purl}"], stdout=logf, stderr=logf)
    try:
        deadline = time.monotonic() + 10
        while True:
            try:
                with socket.create_connection(("127.0.0.1", client), timeout=0.2):
                    break
            except OSError:
                if time.monotonic() > deadline or proc.poll() is not None:
                    pytest.fail(f"etcd did not start on {client}: see {work / 'etcd.log'}")
                time.sleep(0.1)
        yield f"127.0.0.1:{client}"
    finally:
        proc.kill()
        proc.wait(5)
