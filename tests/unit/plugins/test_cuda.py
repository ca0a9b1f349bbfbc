from decimal import Decimal as D
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from berth.plugins.cuda import CUDAPlugin, sysfs_pci_address
from berth.types import DeviceId, KernelId, SlotName


class FakeNVML:
    """The slice of pynvml's API the plugin uses, with pynvml's return shapes."""

    NVML_TEMPERATURE_GPU = 0

    class NVMLError(Exception):
        pass

    def __init__(self, count: int = 2, fail_init: bool = False) -> None:
        self.count, self.fail_init, self.shutdown = count, fail_init, False

    def nvmlInit(self) -> None:
        if self.fail_init:
            raise self.NVMLError("NVML Shared Library Not Found")

    def nvmlShutdown(self) -> None:
        self.shutdown = True

    def nvmlSystemGetDriverVersion(self) -> str:
        return "550.54.15"

    def nvmlSystemGetCudaDriverVersion(self) -> int:
        return 12040

    def nvmlDeviceGetCount(self) -> int:
        return self.count

    def nvmlDeviceGetHandleByIndex(self, i: int) -> int:
        return i

    def nvmlDeviceGetPciInfo(self, h: int) -> Any:
        return SimpleNamespace(busId=f"00000000:{0x17 + h * 0x60:02X}:00.0".encode())

    def nvmlDeviceGetMemoryInfo(self, h: int) -> Any:
        return SimpleNamespace(total=80 << 30, used=(h + 1) << 30, free=0)

    def nvmlDeviceGetName(self, h: int) -> bytes:
        return b"NVIDIA H100 80GB HBM3"

    def nvmlDeviceGetUUID(self, h: int) -> str:
        return f"GPU-{h:08d}"

    def nvmlDeviceGetNumaNodeId(self, h: int) -> int:
        raise self.NVMLError("Not Supported")

    def nvmlDeviceGetNumGpuCores(self, h: int) -> int:
        return 16896

    def nvmlDeviceGetUtilizationRates(self, h: int) -> Any:
        return SimpleNamespace(gpu=10 * (h + 1), memory=0)

    def nvmlDeviceGetTemperature(self, h: int, sensor: int) -> int:
        return 40 + h

    def nvmlDeviceGetPowerUsage(self, h: int) -> int:
        return 70500


def test_pci_address() -> None:
    assert sysfs_pci_address("00000000:17:00.0") == "0000:17:00.0"


async def test_no_driver_is_zero_devices(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level("INFO")
    cuda = CUDAPlugin({}, nvml=FakeNVML(fail_init=True))
    await cuda.init()
    assert cuda.list_devices() == () and cuda.available_slots() == {"cuda.device": D(0)}
    assert (await cuda.get_node_hwinfo())["status"] == "unavailable"
    assert "no NVIDIA driver" in caplog.text
    assert [m.values for m in await cuda.gather_node_measures()] == [{}, {}, {}, {}]


async def test_real_pynvml_without_driver() -> None:
    cuda = CUDAPlugin({})
    await cuda.init()  # this machine has no driver: must not raise
    assert cuda.available_slots() == {"cuda.device": D(0)}


async def test_devices_args_and_measures(tmp_path: Path) -> None:
    numa = tmp_path / "bus/pci/devices/0000:77:00.0"
    numa.mkdir(parents=True)
    (numa / "numa_node").write_text("1\n")
    nvml = FakeNVML()
    cuda = CUDAPlugin({"sys_root": tmp_path, "device_mask": []}, nvml=nvml)
    await cuda.init()
    devs = cuda.list_devices()
    assert [(d.device_id, d.hw_location, d.numa_node, d.extra["uuid"]) for d in devs] == [
        ("0", "0000:17:00.0", None, "GPU-00000000"), ("1", "0000:77:00.0", 1, "GPU-00000001")]
    args = cuda.generate_docker_args({SlotName("cuda.device"): {DeviceId("1"): D(1)}})
    assert args["HostConfig"]["DeviceRequests"] == [
        {"Driver": "nvidia", "DeviceIDs": ["1"], "Capabilities": [["compute", "utility"]]}]
    assert args["Env"] == {"CUDA_VISIBLE_DEVICES": "0", "BERTH_CUDA_GLOBAL_DEVICE_IDS": "0:1"}
    m = {x.key: x for x in await cuda.gather_node_measures()}
    assert m["cuda_util"].values == {"0": D(10), "1": D(20)}
    assert m["cuda_mem"].capacity["1"] == D(80 << 30) and m["cuda_power"].values["0"] == D("70.5")
    per = await cuda.gather_container_measures(
        {KernelId("k"): {SlotName("cuda.device"): {DeviceId("0"): D(1), DeviceId("1"): D(1)}}})
    assert {x.key: x.values for x in per}["cuda_util"] == {"k": D(15)}
    assert cuda.extra_info()["cuda_version"] == "12.4"
    await cuda.cleanup()
    assert nvml.shutdown


async def test_device_mask_hides_uuid() -> None:
    cuda = CUDAPlugin({"device_mask": ["GPU-00000000"]}, nvml=FakeNVML())
    await cuda.init()
    assert [d.device_id for d in cuda.list_devices()] == ["1"]
