import json
import logging
from decimal import Decimal as D
from pathlib import Path

import pytest

from berth.errors import InsufficientResource, InvalidArgument, UnsupportedSlot
from berth.plugins.cpu import CPUPlugin
from berth.plugins.mem import MemoryPlugin
from berth.plugins.mock import MockPlugin
from berth.resources import (
    AffinityPolicy,
    AllocationConflict,
    AllocationOptions,
    KernelAllocation,
    ResourceManager,
)
from berth.types import KernelId, SlotName

GIB = 1 << 30


async def make(tmp_path: Path, mock: dict[str, object] | None = None, *,
               reserved_cpu: int = 1, policy: AffinityPolicy = AffinityPolicy.INTERLEAVED
               ) -> ResourceManager:
    sysdir = tmp_path / "sys/devices/system/node"
    for node, cpus in ((0, "0-1"), (1, "2-3")):
        (sysdir / f"node{node}").mkdir(parents=True, exist_ok=True)
        (sysdir / f"node{node}/cpulist").write_text(cpus + "\n")
    (tmp_path / "proc").mkdir(exist_ok=True)
    (tmp_path / "proc/meminfo").write_text(f"MemTotal: {8 * GIB // 1024} kB\nMemFree: 1 kB\n")
    plugins = [CPUPlugin({"sys_root": tmp_path / "sys", "cores": [0, 1, 2, 3]}),
               MemoryPlugin({"proc_root": tmp_path / "proc"}),
               MockPlugin(mock or {"count": 4, "numa_nodes": [0, 0, 1, 1]})]
    for p in plugins:
        await p.init()
    return ResourceManager(plugins, reserved={SlotName("cpu"): D(reserved_cpu),
                                              SlotName("mem"): D(GIB)}, affinity_policy=policy)


async def test_capacity_is_devices_minus_reserved(tmp_path: Path) -> None:
    rm = await make(tmp_path)
    assert rm.total_slots() == {"cpu": D(3), "mem": D(7 * GIB), "mock.device": D(4)}
    assert rm.available_slots() == rm.total_slots()


async def test_allocate_free_exact_and_docker_args(tmp_path: Path) -> None:
    rm = await make(tmp_path)
    a = rm.allocate(KernelId("k1"), {"cpu": "1.5", "mem": "1g", "mock.device": "2"})
    assert a.taken() == {"cpu": D("1.5"), "mem": D(GIB), "mock.device": D(2)}
    args = rm.docker_args(a)
    host = args["HostConfig"]
    assert host["CpuQuota"] == 150_000 and host["CpuPeriod"] == 100_000
    assert host["Memory"] == host["MemorySwap"] == GIB
    assert args["Env"]["MOCK_VISIBLE_DEVICES"].split(",") == a.device_ids("mock")
    assert rm.used_slots() == a.taken()
    assert rm.free(KernelId("k1")) == a
    assert rm.used_slots() == {"cpu": D(0), "mem": D(0), "mock.device": D(0)}
    assert rm.free(KernelId("k1")) is None


async def test_reserved_cpu_is_never_promised(tmp_path: Path) -> None:
    rm = await make(tmp_path, reserved_cpu=3)
    rm.allocate(KernelId("k1"), {"cpu": "1"})
    with pytest.raises(InsufficientResource) as err:
        rm.allocate(KernelId("k2"), {"cpu": "0.5"})
    assert (err.value.slot, err.value.requested, err.value.available) == ("cpu", D("0.5"), D(0))


async def test_all_or_nothing_across_plugins(tmp_path: Path) -> None:
    rm = await make(tmp_path)
    before = rm.used_slots()
    with pytest.raises(InsufficientResource):
        rm.allocate(KernelId("k"), {"cpu": "1", "mem": "1g", "mock.device": "5"})
    with pytest.raises(UnsupportedSlot):
        rm.allocate(KernelId("k"), {"cpu": "1", "cuda.device": "1"})
    assert rm.used_slots() == before and rm.allocations() == {}


async def test_cpu_follows_accelerator_numa_node(tmp_path: Path) -> None:
    rm = await make(tmp_path, reserved_cpu=0)
    rm.allocate(KernelId("k0"), {"mock.device": "1"})  # takes one device somewhere
    a = rm.allocate(KernelId("k1"), {"mock.device": "1", "cpu": "2"})
    node = 0 if a.device_ids("mock")[0] in ("mock0", "mock1") else 1
    expected = {"0", "1"} if node == 0 else {"2", "3"}
    assert set(a.device_ids("cpu")) == expected


async def test_prefer_single_node_keeps_devices_together(tmp_path: Path) -> None:
    rm = await make(tmp_path, policy=AffinityPolicy.PREFER_SINGLE_NODE)
    a = rm.allocate(KernelId("k"), {"mock.device": "2"})
    assert a.device_ids("mock") in (["mock0", "mock1"], ["mock2", "mock3"])
    inter = await make(tmp_path / "i")
    b = inter.allocate(KernelId("k"), {"mock.device": "2"})
    assert b.device_ids("mock") in (["mock0", "mock2"], ["mock1", "mock3"], ["mock0", "mock3"],
                                    ["mock1", "mock2"])


async def test_fractional_mock_fragmentation_option(tmp_path: Path) -> None:
    rm = await make(tmp_path, {"count": 2, "fractional": True})
    rm.allocate(KernelId("a"), {"mock.shares": "0.6"})
    rm.allocate(KernelId("b"), {"mock.shares": "0.6"})
    opts = AllocationOptions.from_resource_opts({"allow_fractional_resource_fragmentation": False})
    from berth.errors import FractionalResourceFragmented
    with pytest.raises(FractionalResourceFragmented):
        rm.allocate(KernelId("c"), {"mock.shares": "0.5"}, opts)
    c = rm.allocate(KernelId("c"), {"mock.shares": "0.5"})
    assert c.taken()["mock.shares"] == D("0.5") and len(c.device_ids("mock")) == 2


async def test_json_round_trip_and_restore(tmp_path: Path) -> None:
    rm = await make(tmp_path)
    a = rm.allocate(KernelId("k1"), {"cpu": "1", "mem": "2g", "mock.device": "2"})
    record = json.loads(json.dumps(a.to_json()))
    fresh = await make(tmp_path / "again")
    fresh.restore(KernelId("k1"), KernelAllocation.from_json(record))
    assert fresh.used_slots() == rm.used_slots()
    assert fresh.get(KernelId("k1")) == a
    with pytest.raises(AllocationConflict):
        fresh.restore(KernelId("k1"), a)
    other = KernelAllocation(KernelId("k2"), a.requested, a.devices)
    with pytest.raises(AllocationConflict):  # same devices already held by k1
        fresh.restore(KernelId("k2"), other)
    assert fresh.used_slots() == rm.used_slots()
    assert fresh.free(KernelId("k1")) == a


async def test_restore_unknown_plugin_or_device_conflicts(tmp_path: Path) -> None:
    rm = await make(tmp_path)
    bad = KernelAllocation(KernelId("k"), {SlotName("mock.device"): D(1)},
                           {"mock": {SlotName("mock.device"): {"mock9": D(1)}}})
    with pytest.raises(AllocationConflict):
        rm.restore(KernelId("k"), bad)
    gone = KernelAllocation(KernelId("k"), {}, {"cuda": {SlotName("cuda.device"): {"0": D(1)}}})
    with pytest.raises(AllocationConflict):
        rm.restore(KernelId("k"), gone)
    assert rm.allocations() == {}
    with pytest.raises(InvalidArgument):
        KernelAllocation.from_json({"kernel_id": "k"})


async def test_double_allocate_same_kernel_conflicts(tmp_path: Path) -> None:
    rm = await make(tmp_path)
    rm.allocate(KernelId("k"), {"cpu": "1"})
    with pytest.raises(AllocationConflict):
        rm.allocate(KernelId("k"), {"cpu": "1"})


async def test_scan_gpu_alloc_map_and_attached(tmp_path: Path,
                                               caplog: pytest.LogCaptureFixture) -> None:
    rm = await make(tmp_path, {"count": 2, "fractional": True})
    caplog.set_level(logging.INFO)
    a = rm.allocate(KernelId("a"), {"mock.shares": "0.5", "cpu": "1"})
    rm.allocate(KernelId("b"), {"mock.shares": "0.25"})
    scan = rm.scan_gpu_alloc_map()
    assert sum(D(v) for v in scan.values()) == D("0.75") and "0" not in scan
    attached = rm.attached_devices(a)
    assert [d["device_id"] for d in attached["mock"]] == a.device_ids("mock")
    assert "allocated" in caplog.text
