"""One-shot check of the cuda plugin on a GPU machine (not collected by pytest).

Run from the repository root: `PYTHONPATH=src python3 tests/integration/resources/gpu_check.py`.
Prints detection, hwinfo, node and per-kernel measures and the Docker arguments of a real
allocation through the ResourceManager, for comparison with `nvidia-smi` output.
"""

import asyncio
import json
import sys
import types

try:
    import psutil  # noqa: F401  (the cpu plugin needs it; the cuda path does not)
except ImportError:
    sys.modules["psutil"] = types.ModuleType("psutil")

from berth.plugins.cuda import CUDAPlugin
from berth.resources import ResourceManager
from berth.types import KernelId


async def main() -> None:
    cuda = CUDAPlugin({})
    await cuda.init()
    for dev in cuda.list_devices():
        print("DEVICE", dev)
    print("SLOTS", cuda.available_slots())
    print("HWINFO", await cuda.get_node_hwinfo())
    print("EXTRA", cuda.extra_info())
    for m in await cuda.gather_node_measures():
        print("MEASURE", m.key, m.unit, dict(m.values), dict(m.capacity))
    rm = ResourceManager([cuda])
    if cuda.list_devices():
        alloc = rm.allocate(KernelId("k1"), {"cuda.device": "1"})
        print("ALLOC", json.dumps(alloc.to_json()))
        print("DOCKER", json.dumps(rm.docker_args(alloc)))
        print("ATTACHED", rm.attached_devices(alloc))
        per = await cuda.gather_container_measures({alloc.kernel_id: alloc.devices["cuda"]})
        print("PER_KERNEL", [(m.key, dict(m.values)) for m in per])
        print("SCAN", rm.scan_gpu_alloc_map())
    await cuda.cleanup()


asyncio.run(main())
