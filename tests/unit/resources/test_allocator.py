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
               reserved_cpu: int = 1, policy: AffinityPolicy = AffinityPolicy.INTERLEAVED,
               cpu_ratio: str = "1") -> ResourceManager:
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
                                              SlotName("mem"): D(GIB)}, affinity_policy=policy,
                           overcommit={SlotName("cpu"): D(cpu_ratio)})


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


# ---------------------------------------------------------------- CPU overcommit (issue 14)
async def test_ratio_one_is_todays_accounting(tmp_path: Path) -> None:
    rm = await make(tmp_path, cpu_ratio="1.0")
    assert rm.total_slots()["cpu"] == D(3) and rm.overcommit_ratio(SlotName("cpu")) == 1
    for n in range(300):
        rm.allocate(KernelId(f"k{n}"), {"cpu": "0.01"})
    with pytest.raises(InsufficientResource):
        rm.allocate(KernelId("one-more"), {"cpu": "0.01"})


async def test_overcommit_promises_cores_minus_reserved_times_ratio(tmp_path: Path) -> None:
    rm = await make(tmp_path, cpu_ratio="4")   # 4 cores, 1 reserved
    assert rm.total_slots()["cpu"] == D(12)
    kernels = [rm.allocate(KernelId(f"k{n}"), {"cpu": "1"}) for n in range(12)]
    with pytest.raises(InsufficientResource) as refused:
        rm.allocate(KernelId("k12"), {"cpu": "1"})
    assert refused.value.available == 0
    assert rm.available_slots()["cpu"] == 0 and rm.used_slots()["cpu"] == D(12)
    # each kernel's limit stays what it asked: one core of quota, on one core
    for a in kernels:
        host = rm.docker_args(a)["HostConfig"]
        assert host["CpuQuota"] == 100_000 and len(host["CpusetCpus"].split(",")) == 1
    # spread: every core carries 3 kernels (12 over 4 cores)
    per_core: dict[str, int] = {}
    for a in kernels:
        for core in a.device_ids("cpu"):
            per_core[core] = per_core.get(core, 0) + 1
    assert sorted(per_core.values()) == [3, 3, 3, 3]


async def test_one_kernel_never_takes_more_than_a_core_of_one_device(tmp_path: Path) -> None:
    """1.5 cores at ratio 8 must be 1 + 0.5 on two cores (quota 1.5 usable), never 1.5 of
    one core's overcommitted 8; and more than the node's real cores is refused."""
    rm = await make(tmp_path, cpu_ratio="8")
    a = rm.allocate(KernelId("k1"), {"cpu": "1.5"})
    shares = sorted(a.devices["cpu"][SlotName("cpu")].values())
    assert shares == [D("0.5"), D(1)] or shares == [D("0.75"), D("0.75")]
    host = rm.docker_args(a)["HostConfig"]
    assert host["CpuQuota"] == 150_000 and len(host["CpusetCpus"].split(",")) == 2
    with pytest.raises(InsufficientResource):
        rm.allocate(KernelId("k2"), {"cpu": "5"})   # 4 cores exist, whatever the ratio
    b = rm.allocate(KernelId("k3"), {"cpu": "4"}, AllocationOptions(False))
    assert sorted(b.devices["cpu"][SlotName("cpu")].values()) == [D(1)] * 4


async def test_overcommitted_allocation_restores_and_frees_exactly(tmp_path: Path) -> None:
    rm = await make(tmp_path, cpu_ratio="2.5")
    records = [rm.allocate(KernelId(f"k{n}"), {"cpu": "0.5"}) for n in range(15)]
    again = await make(tmp_path, cpu_ratio="2.5")
    for a in records:
        again.restore(a.kernel_id, KernelAllocation.from_json(json.loads(json.dumps(a.to_json()))))
    assert again.used_slots() == rm.used_slots()
    for a in records:
        again.free(a.kernel_id)
    assert again.used_slots()["cpu"] == 0


async def test_only_fractional_slots_overcommit(tmp_path: Path) -> None:
    with pytest.raises(InvalidArgument):
        ResourceManager((await make(tmp_path)).plugins,
                        overcommit={SlotName("mem"): D(2)})


async def test_hwinfo_keeps_the_cores_and_names_the_ratio(tmp_path: Path) -> None:
    from support.facade import facade_over

    for ratio, expected in (("1", None), ("4", "4")):
        rm = await make(tmp_path, cpu_ratio=ratio)
        facade = facade_over("a", resources=rm)
        meta = (await facade.gather_hwinfo())["cpu"]["metadata"]
        assert meta["cores"] == "4"
        assert meta.get("cpu_overcommit_ratio") == expected
        # what the heartbeat reports (total_slots) is in the kernels' own units
        assert rm.total_slots()["cpu"] == 3 * D(ratio)
