"""A real etcd per module on free loopback ports in a tmp data dir, killed by PID after."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from support.procs import EtcdServer


@pytest.fixture(scope="module")
def etcd_addr(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    with EtcdServer(tmp_path_factory.mktemp("etcd")) as etcd:
        yield etcd.addr
