"""Random interleaved allocate/free sequences: never over-allocated, frees return exactly."""

import asyncio
import random
from decimal import Decimal as D
from pathlib import Path

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from berth.errors import ResourceError
from berth.plugins.cpu import CPUPlugin
from berth.plugins.mem import MemoryPlugin
from berth.plugins.mock import MockPlugin
from berth.resources import AllocationOptions, KernelAllocation, ResourceManager
from berth.types import KernelId, SlotName

GIB = 1 << 30
REQUEST = st.fixed_dictionaries({
    "cpu": st.integers(1, 300).map(lambda n: str(D(n) / 100)),
    "mem": st.integers(1, 4 * 1024).map(lambda mb: str(mb << 20)),
    "mock.shares": st.integers(0, 250).map(lambda n: str(D(n) / 100)),
})
OPS = st.lists(st.one_of(st.tuples(st.just("alloc"), REQUEST, st.booleans()),
                         st.tuples(st.just("free"), st.integers(0, 50), st.booleans())),
               max_size=60)


def build(tmp: Path) -> ResourceManager:
    (tmp / "proc").mkdir(parents=True, exist_ok=True)
    (tmp / "proc/meminfo").write_text(f"MemTotal: {8 * GIB // 1024} kB\n")
    plugins = [CPUPlugin({"sys_root": tmp / "nosys", "cores": [0, 1, 2, 3]}),
               MemoryPlugin({"proc_root": tmp / "proc"}),
               MockPlugin({"count": 3, "fractional": True, "numa_nodes": [0, 1]})]
    for p in plugins:
        asyncio.run(p.init())
    return ResourceManager(plugins, reserved={SlotName("cpu"): D(1), SlotName("mem"): D(GIB)})


def check_invariants(rm: ResourceManager, held: dict[KernelId, KernelAllocation]) -> None:
    total, used = rm.total_slots(), rm.used_slots()
    expected = {s: sum((a.taken().get(s, D(0)) for a in held.values()), D(0)) for s in total}
    assert used == expected
    for slot in total:
        assert used[slot] <= total[slot]
    for alloc_map in rm._maps.values():  # per device, nothing over its amount
        for slot in alloc_map.slot_names():
            assert all(f >= 0 for f in alloc_map.free_per_device(slot).values())


@settings(max_examples=500, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(ops=OPS)
def test_random_sequences(tmp_path: Path, ops: list[tuple[object, ...]]) -> None:
    rm = build(tmp_path)
    held: dict[KernelId, KernelAllocation] = {}
    for n, (kind, arg, flag) in enumerate(ops):
        if kind == "alloc":
            kid = KernelId(f"k{n}")
            try:
                opts = AllocationOptions(allow_fractional_resource_fragmentation=bool(flag))
                a = rm.allocate(kid, arg, opts)  # type: ignore[arg-type]
            except ResourceError:
                pass
            else:
                assert a.taken() == {k: v for k, v in a.requested.items() if v}
                held[kid] = a
        elif held:
            kid = sorted(held)[int(arg) % len(held)]  # type: ignore[call-overload]
            assert rm.free(kid) == held.pop(kid)
        check_invariants(rm, held)
    for kid in list(held):
        assert rm.free(kid) == held.pop(kid)
    assert all(v == 0 for v in rm.used_slots().values())


async def test_concurrent_tasks_through_public_path(tmp_path: Path) -> None:
    rm = await asyncio.to_thread(build, tmp_path)
    held: dict[KernelId, KernelAllocation] = {}
    rng = random.Random(1234)

    async def worker(w: int) -> None:
        for i in range(150):
            kid = KernelId(f"w{w}-{i}")
            request = {"cpu": str(D(rng.randint(1, 200)) / 100),
                       "mem": str(rng.randint(1, 3072) << 20),
                       "mock.shares": str(D(rng.randint(0, 150)) / 100)}
            try:
                held[kid] = rm.allocate(kid, request)
            except ResourceError:
                await asyncio.sleep(0)
                continue
            check_invariants(rm, held)
            await asyncio.sleep(0 if rng.random() < 0.5 else 0.001)
            assert rm.free(kid) == held.pop(kid)
            check_invariants(rm, held)

    async with asyncio.TaskGroup() as tg:
        for w in range(16):
            tg.create_task(worker(w))
    assert held == {} and all(v == 0 for v in rm.used_slots().values())


def test_concurrent_threads(tmp_path: Path) -> None:
    import threading
    rm = build(tmp_path)
    errors: list[BaseException] = []

    def worker(w: int) -> None:
        rng = random.Random(w)
        try:
            for i in range(300):
                kid = KernelId(f"t{w}-{i}")
                try:
                    a = rm.allocate(kid, {"cpu": str(D(rng.randint(1, 150)) / 100),
                                          "mock.shares": str(D(rng.randint(0, 120)) / 100)})
                except ResourceError:
                    continue
                assert rm.free(kid) == a
        except BaseException as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    threads = [threading.Thread(target=worker, args=(w,)) for w in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == [] and all(v == 0 for v in rm.used_slots().values())
