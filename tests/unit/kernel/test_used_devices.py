"""kernel_started's ``used_devices`` in the manager's shape, from a kernel's allocation."""

from __future__ import annotations

import pytest

from berth.cli.spec import image_config
from berth.kernel.lifecycle import used_devices
from berth.kernel.spec import ImageConfig
from berth.resources import KernelAllocation


def test_used_devices_groups_slots_per_device_and_drops_empty_ones() -> None:
    allocation = KernelAllocation.from_json({
        "kernel_id": "k", "requested": {"cpu": "1", "cuda.shares": "0.5", "cuda.mem": "1073741824"},
        "devices": {
            "cpu": {"cpu": {"0": "1", "1": "0"}},
            "cuda": {"cuda.shares": {"gpu0": "0.5"}, "cuda.mem": {"gpu0": "1073741824"}},
        }})
    blank = {"model_name": None, "processing_units": None, "memory_size": None}
    assert used_devices(allocation) == {"units": {
        "cpu": {"0": {**blank, "used": {"cpu": "1"}}},
        "cuda": {"gpu0": {**blank, "used": {"cuda.shares": "0.5", "cuda.mem": "1073741824"}}},
    }}


def test_no_allocation_is_an_empty_units_map() -> None:
    assert used_devices(None) == {"units": {}}


def test_a_local_image_runs_by_its_short_name() -> None:
    local = ImageConfig(canonical="local/berth/python:3.11", is_local=True,
                        registry={"name": "local"})
    remote = ImageConfig(canonical="127.0.0.1:5000/berth/python:3.11",
                         registry={"name": "127.0.0.1:5000"})
    assert local.ref == "berth/python:3.11"
    assert remote.ref == remote.canonical


@pytest.mark.parametrize("canonical", ["berth/python:3.11", "python:3.11",
                                       "127.0.0.1:5000/berth/python:3.11",
                                       "localhost/berth/python:3.11"])
def test_the_cli_runs_an_image_under_exactly_the_name_it_was_given(canonical: str) -> None:
    config = ImageConfig.model_validate(image_config(canonical, "x86_64"))
    assert config.ref == canonical
