from decimal import Decimal as D
from importlib.metadata import EntryPoint
from pathlib import Path
from typing import Any

import pytest

from berth.errors import PluginError
from berth.plugins import load_plugins
from berth.plugins.rocm import ROCmPlugin, parse_cards
from berth.plugins.tpu import TPUPlugin
from berth.types import DeviceId, KernelId, SlotName

FIX = Path(__file__).resolve().parents[2] / "fixtures"


def runner_for(path: Path) -> Any:
    async def run(argv: Any) -> str:
        assert list(argv) == ["rocm-smi", "--showallinfo", "--json"]
        return path.read_text()
    return run


async def test_rocm_devices_args_measures() -> None:
    rocm = ROCmPlugin({"sys_root": FIX / "rocm/sys"},
                      runner=runner_for(FIX / "rocm/showallinfo-mi210x2.json"))
    await rocm.init()
    devs = rocm.list_devices()
    assert [(d.device_id, d.numa_node, d.memory_size, d.device_name) for d in devs] == [
        ("card0", 0, 68702699520, "Instinct MI210"), ("card1", 1, 68702699520, "Instinct MI210")]
    args = rocm.generate_docker_args({SlotName("rocm.device"): {DeviceId("card1"): D(1)}})
    paths = [d["PathInContainer"] for d in args["HostConfig"]["Devices"]]
    assert paths == ["/dev/kfd", "/dev/dri/renderD129"]
    assert args["Env"] == {"HIP_VISIBLE_DEVICES": "0", "ROCR_VISIBLE_DEVICES": "0"}
    measures = {m.key: m for m in await rocm.gather_node_measures()}
    assert measures["rocm_util"].values == {"card0": D(17), "card1": D(0)}
    assert measures["rocm_mem"].values["card0"] == D(2147483648)
    assert measures["rocm_power"].values["card1"] == D(39)
    per_kernel = await rocm.gather_container_measures(
        {KernelId("k"): {SlotName("rocm.device"): {DeviceId("card0"): D(1)}}})
    assert per_kernel[0].values == {"k": D(17)}
    assert (await rocm.get_node_hwinfo())["metadata"]["driver_version"] == "6.2.4"


async def test_rocm_newer_output_with_warning_line() -> None:
    rocm = ROCmPlugin({"sys_root": FIX / "rocm/sys"},
                      runner=runner_for(FIX / "rocm/showallinfo-mi300x-warning.txt"))
    await rocm.init()
    (dev,) = rocm.list_devices()
    assert (dev.device_name, dev.extra["render_node"], dev.hw_location) == \
        ("AMD Instinct MI300X", "renderD130", "0000:1b:00.0")
    temp = {m.key: m for m in await rocm.gather_node_measures()}["rocm_temp"]
    assert temp.values == {"card0": D(48)}  # edge is N/A → junction


async def test_rocm_missing_tool_is_zero_devices() -> None:
    async def missing(argv: Any) -> str:
        raise FileNotFoundError("rocm-smi")
    rocm = ROCmPlugin({}, runner=missing)
    await rocm.init()
    assert rocm.list_devices() == () and (await rocm.get_node_hwinfo())["status"] == "unavailable"


def test_rocm_garbage_raises_plugin_error() -> None:
    with pytest.raises(PluginError):
        parse_cards("not json")


async def test_tpu_accel_tree() -> None:
    tpu = TPUPlugin({"dev_root": FIX / "tpu/accel/dev", "sys_root": FIX / "tpu/accel/sys"})
    await tpu.init()
    assert [(d.device_id, d.numa_node) for d in tpu.list_devices()] == [
        ("accel0", 0), ("accel1", 0), ("accel2", 1), ("accel3", 1)]
    args = tpu.generate_docker_args({SlotName("tpu.device"): {DeviceId("accel2"): D(1),
                                                              DeviceId("accel3"): D(1)}})
    assert [d["PathInContainer"] for d in args["HostConfig"]["Devices"]] == \
        ["/dev/accel2", "/dev/accel3"]
    assert args["Env"] == {"TPU_VISIBLE_CHIPS": "2,3", "TPU_CHIPS_PER_PROCESS_BOUNDS": "1,2,1",
                           "TPU_PROCESS_BOUNDS": "1,1,1"}


async def test_tpu_vfio_tree_and_empty_host(tmp_path: Path) -> None:
    tpu = TPUPlugin({"dev_root": FIX / "tpu/vfio/dev", "sys_root": tmp_path})
    await tpu.init()
    assert [d.device_id for d in tpu.list_devices()] == ["vfio0", "vfio1", "vfio2", "vfio3"]
    args = tpu.generate_docker_args({SlotName("tpu.device"): {DeviceId("vfio1"): D(1)}})
    assert [d["PathInContainer"] for d in args["HostConfig"]["Devices"]] == \
        ["/dev/vfio/1", "/dev/vfio/vfio"]
    empty = TPUPlugin({"dev_root": tmp_path})
    await empty.init()
    assert empty.available_slots() == {"tpu.device": D(0)}


def ep(name: str, value: str) -> EntryPoint:
    return EntryPoint(name=name, value=value, group="berth.accelerators")


class Broken:
    key = "broken"
    slot_types = ((SlotName("broken.device"), "count"),)
    require_explicit_allow = False

    def __init__(self, config: Any) -> None:
        raise RuntimeError("boom")


class NotAPlugin:
    key = "odd"

    def __init__(self, config: Any) -> None:
        pass


async def test_loader_allow_block_and_isolation(caplog: pytest.LogCaptureFixture) -> None:
    entries = [ep("cpu", "berth.plugins.cpu:CPUPlugin"), ep("mem", "berth.plugins.mem:MemoryPlugin"),
               ep("mock", "berth.plugins.mock:MockPlugin"),
               ep("tpu", "berth.plugins.tpu:TPUPlugin"),
               ep("broken", f"{__name__}:Broken"), ep("odd", f"{__name__}:NotAPlugin"),
               ep("missing", "berth.plugins.nope:Nope")]
    keys = [p.key for p in await load_plugins(entries=entries)]
    assert keys == ["cpu", "mem", "tpu"]  # mock needs explicit allow; failures skipped
    assert "broken" in caplog.text and "odd" in caplog.text and "missing" in caplog.text
    keys = [p.key for p in await load_plugins(entries=entries, allow=["mock"],
                                             configs={"mock": {"count": 3}})]
    assert keys == ["cpu", "mem", "mock"]  # intrinsic always loaded
    keys = [p.key for p in await load_plugins(entries=entries, block=["tpu", "cpu"])]
    assert keys == ["cpu", "mem"]


async def test_loader_intrinsic_failure_is_fatal(tmp_path: Path) -> None:
    with pytest.raises(PluginError):
        await load_plugins(entries=[], configs={"mem": {"proc_root": tmp_path}})


async def test_installed_entry_points_load() -> None:
    keys = [p.key for p in await load_plugins(allow=["cpu", "mem", "mock", "cuda", "rocm", "tpu"])]
    assert keys[:2] == ["cpu", "mem"] and {"cuda", "rocm", "tpu", "mock"} <= set(keys)
