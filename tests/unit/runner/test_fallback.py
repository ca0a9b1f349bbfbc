"""BatchExecFallback over a fake `docker exec`."""

from __future__ import annotations

import pytest

from berth.errors import RuntimeMissing
from berth.runner import BatchExecFallback


class FakeExec:
    def __init__(self, answers: dict[str, tuple[int, str, str]]) -> None:
        self.answers = answers
        self.calls: list[list[str]] = []

    async def __call__(self, cmd: list[str]) -> tuple[int, str, str]:
        self.calls.append(cmd)
        return next(v for k, v in self.answers.items() if cmd[-1].endswith(k))


async def drive(fb: BatchExecFallback, opts: dict[str, str]) -> list[dict]:
    results = [await fb.execute("job", "batch", "", opts, 1.0, 2)]
    while results[-1]["status"] != "finished":
        results.append(await fb.execute("job", "continue", "", None, 1.0, 2))
    return results


async def test_batch_steps_through_docker_exec() -> None:
    fake = FakeExec({"make": (0, "built\n", ""), "./app": (4, "out\n", "err\n")})
    results = await drive(BatchExecFallback(fake, "/usr/bin/python3"), {"build": "make", "exec": "./app"})
    assert [(r["status"], r["exitCode"]) for r in results] == [
        ("clean-finished", 0), ("build-finished", 0), ("finished", 4)]
    assert results[2]["console"] == [("stdout", "out\n"), ("stderr", "err\n")]
    assert fake.calls == [["/bin/sh", "-c", "cd /home/work && make"],
                          ["/bin/sh", "-c", "cd /home/work && ./app"]]


async def test_failed_build_answers_exec_with_127() -> None:
    fake = FakeExec({"make": (2, "", "boom\n")})
    results = await drive(BatchExecFallback(fake, "python3"), {"build": "make", "exec": "./app"})
    assert [(r["status"], r["exitCode"]) for r in results][1:] == [("build-finished", 2), ("finished", 127)]
    assert len(fake.calls) == 1


@pytest.mark.parametrize("mode", ["query", "input"])
async def test_query_mode_names_missing_runtime(mode: str) -> None:
    fb = BatchExecFallback(FakeExec({}), "/opt/conda/bin/python")
    with pytest.raises(RuntimeMissing) as info:
        await fb.execute("r", mode, "print(1)", {}, 1.0, 2)
    assert "/opt/conda/bin/python" in str(info.value)
    assert info.value.data["runtime_path"] == "/opt/conda/bin/python"
    with pytest.raises(RuntimeMissing):
        await fb.complete("pri")
