"""Service ports are frozen records in the domain; the wire dict only at the edges."""

from __future__ import annotations

import json

import pytest

from berth.errors import InvalidKernelSpec
from berth.kernel.service_ports import (
    ServicePort,
    assign_host_ports,
    declared_service_ports,
    host_port_map,
    service_ports_from_wire,
    service_ports_label,
    service_ports_to_wire,
    without_host_ports,
)
from berth.kernel.spec import KernelSpec, parse_kernel_spec
from berth.types import KernelId

LABEL = "jupyter:http:8080,tb:http:[6006,6007],sh:tcp:9000"


def _spec(**extra: object) -> KernelSpec:
    return parse_kernel_spec({"image": {"canonical": "berth/python:3.11"},
                              "resource_slots": {"cpu": "1", "mem": "268435456"}, **extra},
                             kernel_id="k1", session_id="s1")


def test_declared_ports_then_host_ports_make_new_records() -> None:
    spec = _spec(preopen_ports=[9100])
    ports = declared_service_ports(KernelId("k1"), spec,
                                   {"ai.backend.service-ports": LABEL})
    assert [p.shape for p in ports] == [("jupyter", "http", (8080,)),
                                        ("tb", "http", (6006, 6007)), ("sh", "tcp", (9000,)),
                                        ("9100", "preopen", (9100,))]
    assert all(p.host_ports == () for p in ports)
    held = assign_host_ports(ports, [30001, 30002, 30003, 30004, 30005, 30006])
    assert [p.host_ports for p in held] == [(30001,), (30002, 30003), (30004,), (30005,)]
    assert all(p.host_ports == () for p in ports)  # the old records are unchanged
    assert host_port_map(held)["tb"] == [30002, 30003]
    assert without_host_ports(held) == ports
    assert service_ports_label(held) == LABEL + ",9100:preopen:9100"


def test_wire_shape_is_the_one_the_ledger_and_rpc_carry() -> None:
    port = ServicePort("tb", "http", (6006, 6007), (30002, 30003))
    wire = service_ports_to_wire([port])
    assert json.dumps(wire) == json.dumps([
        {"name": "tb", "protocol": "http", "container_ports": [6006, 6007],
         "host_ports": [30002, 30003], "is_inference": False}])
    assert service_ports_from_wire(wire) == (port,)


def test_preopen_port_colliding_with_an_image_service_is_refused() -> None:
    with pytest.raises(InvalidKernelSpec):
        declared_service_ports(KernelId("k1"), _spec(preopen_ports=[8080]),
                               {"ai.backend.service-ports": LABEL})


def test_other_cluster_roles_publish_nothing() -> None:
    spec = _spec(cluster_role="sub")
    assert declared_service_ports(KernelId("k1"), spec,
                                  {"ai.backend.service-ports": LABEL}) == ()
