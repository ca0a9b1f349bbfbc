"""The leak gauges (what the node holds) and the janitor's reaped counter: names, labels, values
read at scrape time, and what reconcile and sync report into them over the fake engine."""

from __future__ import annotations

from decimal import Decimal
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

from berth.telemetry.metrics import BerthMetrics, Holdings
from berth.types import KERNEL_ID_LABEL, OWNER_LABEL

from ..kernel.harness import AGENT_ID, build, new_id


def _samples(m: BerthMetrics) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    text = m.exposition().decode()
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for f in text_string_to_metric_families(text) for s in f.samples}


def test_holdings_are_read_at_scrape_time() -> None:
    m = BerthMetrics("ag-1")
    held = {"now": Holdings(containers=None, ledgers=2, scratch_dirs=3, host_ports=4,
                            slots={"cpu": Decimal("1.5"), "mem": Decimal(1 << 30)})}
    m.set_holdings_source(lambda: held["now"])
    s = _samples(m)
    a = (("agent_id", "ag-1"),)
    assert s[("berth_node_ledgers", a)] == 2
    assert s[("berth_node_scratch_dirs", a)] == 3
    assert s[("berth_node_host_ports_reserved", a)] == 4
    assert s[("berth_node_slots_allocated", (("agent_id", "ag-1"), ("slot", "cpu")))] == 1.5
    assert s[("berth_node_slots_allocated", (("agent_id", "ag-1"), ("slot", "mem")))] == 1 << 30
    assert not any(name == "berth_node_containers_owned" for name, _ in s)  # not listed yet
    held["now"] = Holdings(containers=5)
    s = _samples(m)
    assert s[("berth_node_containers_owned", a)] == 5
    assert s[("berth_node_ledgers", a)] == 0


def test_reaped_counter_has_every_kind_from_the_start() -> None:
    m = BerthMetrics("ag-1")
    for kind in ("kernel", "container", "scratch"):
        assert _samples(m)[("berth_janitor_reaped_total",
                            (("agent_id", "ag-1"), ("kind", kind)))] == 0
    m.observe_reaped("container", 3)
    m.observe_reaped("container", 0)
    assert _samples(m)[("berth_janitor_reaped_total",
                        (("agent_id", "ag-1"), ("kind", "container")))] == 3
    with pytest.raises(ValueError):
        m.observe_reaped("volume")


async def test_reconcile_and_sync_report_what_they_reaped(tmp_path: Path) -> None:
    h = await build(tmp_path)
    try:
        m = BerthMetrics(AGENT_ID)
        kept = await h.create()
        doomed = await h.create()
        h.backend.kill(h.container_id(doomed), 0)  # died unseen: the next sync notices
        stray = await h.backend.create("stray", {"Image": "berth/busybox:latest", "Labels": {
            OWNER_LABEL: AGENT_ID, KERNEL_ID_LABEL: new_id()}})
        reconciler = h.reconciler()
        reconciler.on_reaped = m.observe_reaped
        await reconciler.sync()
        assert reconciler.containers_owned == 2  # kept's and doomed's (ended since)
        s = _samples(m)

        def reaped(kind: str) -> float:
            return s[("berth_janitor_reaped_total", (("agent_id", AGENT_ID), ("kind", kind)))]
        assert (reaped("kernel"), reaped("container"), reaped("scratch")) == (1, 1, 0)
        assert stray not in h.backend.containers
        await reconciler.sync()
        assert reconciler.containers_owned == 1
        assert h.registry.find(kept) is not None

        (h.scratch.root / new_id()).mkdir()  # a scratch dir no ledger owns
        fresh = await build(tmp_path, h.backend)  # an agent restart over the same node
        restarted = fresh.reconciler()
        restarted.on_reaped = m.observe_reaped
        report = await restarted.at_start()
        assert report.adopted == [kept]
        assert restarted.containers_owned == 1
        s = _samples(m)
        assert reaped("scratch") == 1
        await fresh.lc.close()
    finally:
        await h.lc.close()
