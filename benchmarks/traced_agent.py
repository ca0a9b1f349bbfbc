"""`berth` under tracemalloc, for `scale.py --heap DIR`: SIGUSR2 writes a heap snapshot
(`<DIR>/heap-<n>.snap`, n counting up) and malloc statistics beside it; the rest of argv is
`berth`'s own. Tracing starts once the agent's modules are imported (what grows with kernels
is what matters). Diagnostics only: tracing slows the agent and adds to its RSS.

`BERTH_HEAP_CENSUS=1`: no tracing (the agent runs at its own speed); SIGUSR2 writes
`<DIR>/census-<n>.txt` instead: live objects by type (count and `sys.getsizeof`), the most
common dict shapes and what holds them, and how many objects were unreachable garbage (a full
collection runs after the census). Diff two censuses to see what a kernel costs; this is how
the aiodocker `DockerContainer` cycles (two per kernel, each holding an inspect answer) showed.
"""

from __future__ import annotations

import collections
import gc
import itertools
import os
import signal
import sys
import tracemalloc
from pathlib import Path
from types import FrameType

import berth.daemon.agent
import berth.daemon.server  # noqa: F401 - imported before tracing starts (start-up speed)
from berth.cli.main import main


def _holders() -> str:
    """The most common shapes of live dicts (their first keys), and what holds a few of the
    largest group: a decoded engine answer kept per kernel shows up here."""
    shapes: collections.Counter[tuple[str, ...]] = collections.Counter()
    examples: dict[tuple[str, ...], dict[object, object]] = {}
    for obj in gc.get_objects():
        if isinstance(obj, dict) and len(obj) >= 2:
            shape = tuple(str(k) for k in itertools.islice(obj, 4))
            shapes[shape] += 1
            examples.setdefault(shape, obj)
    lines = []
    for shape, count in shapes.most_common(15):
        holders = [type(r).__qualname__ + (f".{next(iter(r))}" if isinstance(r, dict) and r
                                           else "")
                   for r in gc.get_referrers(examples[shape])][:4]
        lines.append(f"{count:7d} {shape} held by {holders}")
    return "\n".join(lines) + "\n"


def _census() -> str:
    """Live objects by type, counted and sized (``sys.getsizeof``): every object the garbage
    collector tracks and each one those refer to directly (strings, numbers, bytes), once."""
    seen: set[int] = set()
    count: collections.Counter[str] = collections.Counter()
    size: collections.Counter[str] = collections.Counter()
    for obj in gc.get_objects():
        for o in (obj, *gc.get_referents(obj)):
            if id(o) in seen:
                continue
            seen.add(id(o))
            name = type(o).__qualname__
            count[name] += 1
            size[name] += sys.getsizeof(o)
    lines = [f"{size[n]:12d} {count[n]:9d} {n}" for n, _ in size.most_common(40)]
    return f"total {sum(size.values())} bytes in {sum(count.values())} objects\n" + \
        "\n".join(lines) + "\n"


def _install(out: Path, census: bool) -> None:
    counter = itertools.count()

    def dump(_signum: int, _frame: FrameType | None) -> None:
        n = next(counter)
        if census:
            text = _census() + _holders()
            (out / f"census-{n}.txt").write_text(
                f"{text}unreachable (a full collection frees them): {gc.collect()}\n")
            return
        tracemalloc.take_snapshot().dump(str(out / f"heap-{n}.snap"))
        traced, _peak = tracemalloc.get_traced_memory()
        (out / f"heap-{n}.txt").write_text(f"traced {traced}\n{_holders()}")

    signal.signal(signal.SIGUSR2, dump)


if __name__ == "__main__":
    out = Path(os.environ["BERTH_HEAP_DIR"])
    out.mkdir(parents=True, exist_ok=True)
    census = os.environ.get("BERTH_HEAP_CENSUS") == "1"  # counts by type, no tracing
    if not census:
        tracemalloc.start(int(os.environ.get("BERTH_HEAP_FRAMES", "8")))
    _install(out, census)
    main()
