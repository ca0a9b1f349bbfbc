"""`rocm` accelerator: AMD GPUs from `rocm-smi --showallinfo --json`.

Devices are rocm-smi's card keys (`card0`, …); slot `rocm.device` (whole GPUs). Containers get
`/dev/kfd` and the allocated `/dev/dri/renderD*` nodes (found by matching each card's
`PCI Bus` with `{sys_root}/class/drm/renderD*/device/uevent` `PCI_SLOT_NAME`), and
`HIP_VISIBLE_DEVICES` / `ROCR_VISIBLE_DEVICES` = `0..k-1` (only the passed GPUs exist inside).
The command runner is injectable (tests feed captured outputs); a host without rocm-smi
reports zero devices. Parsing is pure (`parse_cards`).
"""

from __future__ import annotations

import asyncio
import json
import logging
import re
from collections.abc import Awaitable, Callable, Mapping, Sequence
from decimal import Decimal, InvalidOperation
from pathlib import Path
from typing import Any, ClassVar

from berth.errors import PluginError
from berth.resources import (
    AllocationStrategy,
    AttachedDevice,
    ComputeDevice,
    DeviceAlloc,
    DiscreteAllocMap,
    DockerArgs,
    HardwareInfo,
    Measure,
    allocated_devices,
    device_node,
    per_kernel_measures,
    slot_metadata,
    whole_device_alloc_map,
)
from berth.types import DeviceId, KernelId, SlotName, SlotType

log = logging.getLogger(__name__)

SLOT = SlotName("rocm.device")
SMI_ARGS = ("rocm-smi", "--showallinfo", "--json")
Runner = Callable[[Sequence[str]], Awaitable[str]]
_CARD_RE = re.compile(r"^card(\d+)$")


async def run_command(argv: Sequence[str]) -> str:
    proc = await asyncio.create_subprocess_exec(*argv, stdout=asyncio.subprocess.PIPE,
                                                stderr=asyncio.subprocess.PIPE)
    out, err = await proc.communicate()
    if proc.returncode != 0:
        raise PluginError(f"{argv[0]} exited {proc.returncode}: {err.decode()[-200:]}")
    return out.decode()


def number(card: Mapping[str, Any], *keys: str) -> Decimal | None:
    """First parseable figure among `keys` ("38.0", "N/A" → None)."""
    for key in keys:
        try:
            return Decimal(str(card[key]).strip().rstrip("%"))
        except (KeyError, InvalidOperation):
            continue
    return None


def parse_cards(text: str) -> dict[str, dict[str, Any]]:
    """`{"card0": {...}, …}` from rocm-smi JSON, in card order; other keys (`system`) dropped."""
    try:
        data = json.loads(text[text.index("{"):])
    except (ValueError, json.JSONDecodeError) as exc:
        raise PluginError(f"rocm-smi output is not JSON: {exc}") from None
    cards = {k: v for k, v in data.items() if _CARD_RE.match(k) and isinstance(v, dict)}
    return dict(sorted(cards.items(), key=lambda kv: int(kv[0][4:])))


def driver_version(text: str) -> str:
    data = json.loads(text[text.index("{"):])
    return str(data.get("system", {}).get("Driver version", ""))


def render_nodes(sys_root: Path) -> dict[str, str]:
    """PCI address (lowercase) → `renderD128`, from sysfs uevent files."""
    found: dict[str, str] = {}
    for node in sorted((sys_root / "class/drm").glob("renderD*")):
        try:
            uevent = (node / "device/uevent").read_text()
        except OSError:
            continue
        for line in uevent.splitlines():
            if line.startswith("PCI_SLOT_NAME="):
                found[line.split("=", 1)[1].strip().lower()] = node.name
    return found


def card_to_device(name: str, card: Mapping[str, Any], render: Mapping[str, str]
                   ) -> ComputeDevice:
    pci = str(card.get("PCI Bus", "")).lower()
    node = number(card, "(Topology) Numa Node", "NUMA node")
    return ComputeDevice(
        DeviceId(name), pci, int(node) if node is not None and node >= 0 else None,
        int(number(card, "VRAM Total Memory (B)") or 0),
        int(number(card, "Compute Unit", "CU count") or 0),
        str(card.get("Card series") or card.get("Device Name") or "AMD GPU"),
        {"render_node": render.get(pci, ""), "gpu_id": str(card.get("GPU ID", ""))})


def measures_from_cards(cards: Mapping[str, Mapping[str, Any]]) -> list[Measure]:
    util, mem, total, temp, power = ({} for _ in range(5))  # type: ignore[var-annotated]
    for name, card in cards.items():
        for target, value in (
            (util, number(card, "GPU use (%)")),
            (mem, number(card, "VRAM Total Used Memory (B)")),
            (total, number(card, "VRAM Total Memory (B)")),
            (temp, number(card, "Temperature (Sensor edge) (C)",
                          "Temperature (Sensor junction) (C)")),
            (power, number(card, "Average Graphics Package Power (W)",
                           "Current Socket Graphics Package Power (W)")),
        ):
            if value is not None:
                target[name] = value
    return [Measure("rocm_util", "percent", util), Measure("rocm_mem", "bytes", mem, total),
            Measure("rocm_temp", "celsius", temp), Measure("rocm_power", "watts", power)]


class ROCmPlugin:
    key: ClassVar[str] = "rocm"
    env_names: ClassVar[frozenset[str]] = frozenset({"HIP_VISIBLE_DEVICES",
                                                     "ROCR_VISIBLE_DEVICES"})
    slot_types: ClassVar[Sequence[tuple[SlotName, SlotType]]] = ((SLOT, SlotType.COUNT),)
    require_explicit_allow: ClassVar[bool] = False

    def __init__(self, config: Mapping[str, Any] | None = None,
                 runner: Runner = run_command) -> None:
        config = config or {}
        self._sys_root = Path(config.get("sys_root", "/sys"))
        self._dev_root = Path(config.get("dev_root", "/dev"))
        self._run = runner
        self._devices: list[ComputeDevice] = []
        self._driver = ""
        self._status_info: str | None = None

    async def _query(self) -> str:
        return await self._run(SMI_ARGS)

    async def init(self) -> None:
        try:
            text = await self._query()
        except (OSError, PluginError) as exc:
            self._status_info = f"rocm-smi unavailable: {exc}"
            log.info("rocm: rocm-smi unavailable (%s); 0 devices", exc)
            return
        render = render_nodes(self._sys_root)
        self._devices = [card_to_device(n, c, render) for n, c in parse_cards(text).items()]
        self._driver = driver_version(text)
        log.info("rocm: %d device(s), driver %s", len(self._devices), self._driver)

    async def cleanup(self) -> None:
        return None

    def list_devices(self) -> Sequence[ComputeDevice]:
        return tuple(self._devices)

    def available_slots(self) -> dict[SlotName, Decimal]:
        return {SLOT: Decimal(len(self._devices))}

    def create_alloc_map(self) -> DiscreteAllocMap:
        return whole_device_alloc_map(SLOT, self._devices, AllocationStrategy.EVENLY)

    def _device(self, path: str) -> dict[str, str]:
        return device_node(self._dev_root, path)

    def generate_docker_args(self, device_alloc: DeviceAlloc) -> DockerArgs:
        by_id = {d.device_id: d for d in self._devices}
        ids = sorted(allocated_devices(device_alloc), key=lambda d: int(d[4:]))
        nodes = [by_id[d].extra["render_node"] for d in ids]
        if not all(nodes):
            raise PluginError(f"rocm: no render node for {ids}", devices=ids)
        local = ",".join(str(i) for i in range(len(ids)))
        return {"HostConfig": {"Devices": [self._device("kfd"),
                                           *(self._device(f"dri/{n}") for n in nodes)],
                               "GroupAdd": ["video"]},
                "Env": {"HIP_VISIBLE_DEVICES": local, "ROCR_VISIBLE_DEVICES": local}}

    def get_attached_devices(self, device_alloc: DeviceAlloc) -> list[AttachedDevice]:
        by_id = {d.device_id: d for d in self._devices}
        return [{"device_id": d, "model_name": by_id[d].device_name,
                 "data": {"proc": by_id[d].processing_units, "mem": by_id[d].memory_size}}
                for d in allocated_devices(device_alloc) if d in by_id]

    async def gather_node_measures(self) -> list[Measure]:
        if not self._devices:
            return []
        return measures_from_cards(parse_cards(await self._query()))

    async def gather_container_measures(self, allocs: Mapping[KernelId, DeviceAlloc]
                                        ) -> list[Measure]:
        node = {m.key: m.values for m in await self.gather_node_measures()}
        return per_kernel_measures(node, allocs, prefix="rocm") if node else []

    async def get_node_hwinfo(self) -> HardwareInfo:
        if self._status_info is not None:
            return {"status": "unavailable", "status_info": self._status_info, "metadata": {}}
        return {"status": "healthy", "status_info": None,
                "metadata": {"driver_version": self._driver, "devices": str(len(self._devices)),
                             "models": ",".join(sorted({d.device_name for d in self._devices}))}}

    def get_metadata(self) -> dict[str, dict[str, Any]]:
        return {SLOT: slot_metadata(SLOT, human_name="ROCm GPU", unit="GPU",
                                    description="ROCm-capable GPU", icon="rocm")}

    def extra_info(self) -> dict[str, str]:
        return {"rocm_driver_version": self._driver}
