"""`berth` with a timeline, for `create_breakdown.py timeline`: each call of the Docker backend
(create, start, inspect, image inspect, and the destroy's kill-and-remove), of the lifecycle's
create steps and of the runner's ready probe writes `<unix time> <Class.method> >` on entry and
`... <` on exit to the file named by `BERTH_TIMELINE` (appended, line-buffered). The rest of
argv is `berth`'s own."""

from __future__ import annotations

import functools
import os
import time
from collections.abc import Awaitable, Callable
from typing import Any

from berth.backend.docker import DockerBackend
from berth.cli.main import main
from berth.kernel.lifecycle import KernelLifecycle
from berth.runner.client import RunnerClient

OUT = open(os.environ["BERTH_TIMELINE"], "a", buffering=1)  # noqa: SIM115 - the process's life


def _timed(cls: type, name: str) -> None:
    fn: Callable[..., Awaitable[Any]] = getattr(cls, name)

    @functools.wraps(fn)
    async def timed(*args: Any, **kwargs: Any) -> Any:
        OUT.write(f"{time.time():.6f} {cls.__name__}.{name} >\n")
        try:
            return await fn(*args, **kwargs)
        finally:
            OUT.write(f"{time.time():.6f} {cls.__name__}.{name} <\n")
    setattr(cls, name, timed)


for _name in ("create", "start", "inspect", "image_inspect", "kill_and_remove"):
    _timed(DockerBackend, _name)
for _name in ("_create_kernel", "_materialise", "_run_container", "_wait_ready"):
    _timed(KernelLifecycle, _name)
_timed(RunnerClient, "probe_ready")

if __name__ == "__main__":
    main()
