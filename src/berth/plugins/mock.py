"""`mock` accelerator: configurable fake devices, so every GPU path runs without a GPU.

Config (agent.toml `[plugins.mock]`, given as a dict):

    count = 2                 # or an explicit list: devices = [{id, memory, processing_units,
    memory = "16g"            #                                   numa_node, model}, ...]
    processing_units = 108
    numa_nodes = [0, 1]       # assigned round-robin to counted devices
    fractional = false        # true → slot `mock.shares` (quantum 0.01), else `mock.device`
    model = "Mock Accelerator"
    fail-init = "message"     # init() raises PluginError (tests the agent's failure path)
    fail-measures = "message" # gather_*_measures raise PluginError

Containers get `MOCK_VISIBLE_DEVICES=mock0,mock1` and `BERTH_MOCK_DEVICES=mock0:1,mock1:1`
(device:amount). Measures are synthetic, smooth functions of an injectable clock. Loaded only
when explicitly allowed (a production node must never advertise fake devices by accident).
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Mapping, Sequence
from decimal import Decimal
from typing import Any, ClassVar

from berth.errors import ConfigError, PluginError
from berth.resources import (
    AllocationStrategy,
    AllocMap,
    AttachedDevice,
    ComputeDevice,
    DeviceAlloc,
    DeviceSlot,
    DiscreteAllocMap,
    DockerArgs,
    FractionAllocMap,
    HardwareInfo,
    Measure,
    allocated_devices,
    parse_binary_size,
    per_kernel_measures,
    slot_metadata,
    total_per_device,
)
from berth.types import DeviceId, KernelId, SlotName, SlotType

DEVICE_SLOT = SlotName("mock.device")
SHARES_SLOT = SlotName("mock.shares")


def devices_from_config(config: Mapping[str, Any]) -> list[ComputeDevice]:
    model = str(config.get("model", "Mock Accelerator"))
    if "devices" in config:
        return [_device(spec, i, model) for i, spec in enumerate(config["devices"])]
    nodes = list(config.get("numa_nodes", [0]))
    spec = {k: config[k] for k in ("memory", "processing_units") if k in config}
    return [_device({**spec, "numa_node": nodes[i % len(nodes)] if nodes else None}, i, model)
            for i in range(int(config.get("count", 1)))]


def _device(spec: Mapping[str, Any], index: int, model: str) -> ComputeDevice:
    try:
        node = spec.get("numa_node")
        return ComputeDevice(
            DeviceId(str(spec.get("id", f"mock{index}"))), f"mock:{index:02x}:00.0",
            int(node) if node is not None else None,
            int(parse_binary_size(spec.get("memory", "8g"))),
            int(spec.get("processing_units", 8)), str(spec.get("model", model)),
            {"index": str(index)})
    except (TypeError, ValueError) as exc:
        raise ConfigError(str(exc), key_path=f"plugins.mock.devices[{index}]") from None


class MockPlugin:
    key: ClassVar[str] = "mock"
    env_names: ClassVar[frozenset[str]] = frozenset({"MOCK_VISIBLE_DEVICES",
                                                     "BERTH_MOCK_DEVICES"})
    slot_types: ClassVar[Sequence[tuple[SlotName, SlotType]]] = (
        (DEVICE_SLOT, SlotType.COUNT), (SHARES_SLOT, SlotType.COUNT))
    require_explicit_allow: ClassVar[bool] = True

    def __init__(self, config: Mapping[str, Any] | None = None,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self._config = dict(config or {})
        self._fractional = bool(self._config.get("fractional", False))
        # Measures are named {prefix}_util, _mem, _temp, _power; prefix "cuda" makes the mock
        # stand in for GPUs on the cuda_* metrics and dashboards of machines without one.
        self._prefix = str(self._config.get("metric-prefix",
                                            self._config.get("metric_prefix", "mock")))
        self._slot = SHARES_SLOT if self._fractional else DEVICE_SLOT
        self._clock = clock
        self._devices: list[ComputeDevice] = []

    def _fail(self, what: str) -> None:
        message = self._config.get(f"fail-{what}")
        if message:
            raise PluginError(f"mock: {message}", plugin=self.key)

    async def init(self) -> None:
        self._fail("init")
        self._devices = devices_from_config(self._config)

    async def cleanup(self) -> None:
        return None

    def list_devices(self) -> Sequence[ComputeDevice]:
        return tuple(self._devices)

    def available_slots(self) -> dict[SlotName, Decimal]:
        return {self._slot: Decimal(len(self._devices))}

    def create_alloc_map(self) -> AllocMap:
        slots = {d.device_id: DeviceSlot(self._slot, SlotType.COUNT, Decimal(1))
                 for d in self._devices}
        strategy = AllocationStrategy(self._config.get("strategy", "evenly"))
        if self._fractional:
            return FractionAllocMap(slots, strategy=strategy,
                                    quantum=Decimal(str(self._config.get("quantum", "0.01"))))
        return DiscreteAllocMap(slots, strategy=strategy)

    def generate_docker_args(self, device_alloc: DeviceAlloc) -> DockerArgs:
        amounts = total_per_device(device_alloc)
        ids = allocated_devices(device_alloc)
        return {"Env": {"MOCK_VISIBLE_DEVICES": ",".join(ids),
                        "BERTH_MOCK_DEVICES": ",".join(f"{d}:{amounts[d]}" for d in ids)}}

    def get_attached_devices(self, device_alloc: DeviceAlloc) -> list[AttachedDevice]:
        by_id = {d.device_id: d for d in self._devices}
        return [{"device_id": d, "model_name": by_id[d].device_name,
                 "data": {"smp": by_id[d].processing_units, "mem": by_id[d].memory_size,
                          "share": str(a)}}
                for d, a in total_per_device(device_alloc).items()]

    def _wave(self, index: int, low: float, high: float) -> Decimal:
        phase = self._clock() / 10.0 + index
        return Decimal(f"{low + (high - low) * (0.5 + 0.5 * math.sin(phase)):.2f}")

    async def gather_node_measures(self) -> list[Measure]:
        self._fail("measures")
        devs = list(enumerate(self._devices))
        return [
            Measure(f"{self._prefix}_util", "percent", {d.device_id: self._wave(i, 0, 100) for i, d in devs}),
            Measure(f"{self._prefix}_mem", "bytes",
                    {d.device_id: (self._wave(i, 0, 1) * d.memory_size).to_integral_value()
                     for i, d in devs}, {d.device_id: Decimal(d.memory_size) for d in self._devices}),
            Measure(f"{self._prefix}_temp", "celsius", {d.device_id: self._wave(i, 30, 80) for i, d in devs}),
            Measure(f"{self._prefix}_power", "watts", {d.device_id: self._wave(i, 50, 300) for i, d in devs}),
        ]

    async def gather_container_measures(self, allocs: Mapping[KernelId, DeviceAlloc]
                                        ) -> list[Measure]:
        node = {m.key: m.values for m in await self.gather_node_measures()}
        return per_kernel_measures(node, allocs, prefix=self._prefix)

    async def get_node_hwinfo(self) -> HardwareInfo:
        return {"status": "healthy", "status_info": None,
                "metadata": {"devices": str(len(self._devices)),
                             "model": self._config.get("model", "Mock Accelerator")}}

    def get_metadata(self) -> dict[str, dict[str, Any]]:
        unit = "FGPU" if self._fractional else "GPU"
        return {self._slot: slot_metadata(self._slot, human_name="Mock GPU", unit=unit,
                                          description="Mock accelerator", round_length=2)}

    def extra_info(self) -> dict[str, str]:
        return {"mock_version": "1"}

