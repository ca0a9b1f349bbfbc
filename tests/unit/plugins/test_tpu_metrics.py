"""TPU utilization from libtpu's runtime metrics (issue 12 item 6): the hand decoder against
messages the protobuf library itself encodes, holders of chip device nodes found in a /proc
tree, and per-core figures folded into chips."""

from __future__ import annotations

import os
from decimal import Decimal
from pathlib import Path

import pytest
from support.libtpu import message_class, metric_response

from berth.plugins.tpu_metrics import (
    WireError,
    chip_holders,
    decode_metric_response,
    encode_metric_request,
    per_chip,
)


def test_request_is_what_the_protobuf_library_reads() -> None:
    request = message_class("MetricRequest").FromString(
        encode_metric_request("tpu.runtime.tensorcore.dutycycle.percent"))
    assert request.metric_name == "tpu.runtime.tensorcore.dutycycle.percent"
    long = "m" * 300  # a two-byte length
    assert message_class("MetricRequest").FromString(encode_metric_request(long)).metric_name == long


@pytest.mark.parametrize("kvlist", [False, True])
def test_response_decoded_like_the_protobuf_library_encodes_it(kvlist: bool) -> None:
    duty = metric_response("d", [37.25, 0.0, 100.0, 12.5], ordinal_kvlist=kvlist)
    assert decode_metric_response(duty) == {0: Decimal("37.25"), 1: Decimal("0.0"),
                                            2: Decimal("100.0"), 3: Decimal("12.5")}
    hbm = metric_response("h", [17179869184, 0], ordinal_kvlist=kvlist)
    assert decode_metric_response(hbm) == {0: Decimal(17179869184), 1: Decimal(0)}
    assert decode_metric_response(b"") == {}
    with pytest.raises(WireError):
        decode_metric_response(duty[:-3])


def test_chip_holders_from_a_proc_tree(tmp_path: Path) -> None:
    dev = tmp_path / "dev"
    dev.mkdir()
    chips = {f"accel{i}": dev / f"accel{i}" for i in range(3)}
    proc = tmp_path / "proc"
    for pid, targets in ((100, ["accel1", "accel0", "null"]), (200, ["accel2"]), (300, [])):
        fd = proc / str(pid) / "fd"
        fd.mkdir(parents=True)
        for n, name in enumerate(targets):
            os.symlink(str(dev / name), fd / str(n))
    (proc / "self").mkdir()
    assert chip_holders(chips, proc) == {100: ["accel0", "accel1"], 200: ["accel2"]}


def test_per_core_figures_fold_into_chips() -> None:
    cores = {0: Decimal(10), 1: Decimal(30), 2: Decimal(50), 3: Decimal(70)}
    assert per_chip(cores, ["accel0", "accel1"], summed=False) == {
        "accel0": Decimal(20), "accel1": Decimal(60)}
    assert per_chip(cores, ["accel0", "accel1"], summed=True) == {
        "accel0": Decimal(40), "accel1": Decimal(120)}
    assert per_chip(cores, ["accel0", "accel1", "accel2"], summed=True) == {}  # no fit: unknown
