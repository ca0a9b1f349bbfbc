"""The judge of the event tests can say no (scripts/manager_queue_selfcheck.py): the manager's
queue reader of scripts/mq.py, fed raw entries with no agent involved, records as failures
exactly the shapes the 26.9.6 manager rejects and decodes the ones it accepts."""

from __future__ import annotations

from pathlib import Path

from support.procs import LOOPBACK, RedisServer

from .conftest import run_script


def test_the_queue_reader_rejects_what_the_manager_rejects(tmp_path: Path,
                                                           compat_keys: Path) -> None:
    with RedisServer(tmp_path / "redis") as rds:
        result = run_script("manager_queue_selfcheck.py",
                            env={"BERTH_REDIS_ADDR": f"{LOOPBACK}:{rds.port}"}, keys=compat_keys)
    assert result["anycast_ok"] == ["kernel_terminated"], result
    assert result["broadcast_ok"] == ["kernel_terminated"], result
    failures = sorted((f["via"], str(f["name"]), f["error"]) for f in result["failures"])
    expected = sorted([
        ("stream", "kernel_terminated", "reason"),  # oom-killed: no KernelLifecycleEventReason
        ("stream", "kernel_started", "units"),      # used_devices without units
        ("stream", "None", "source"),               # no source field in the entry
        ("pubsub", "None", "payload"),              # payload nested as an object, not a string
    ])
    assert [(v, n) for v, n, _ in failures] == [(v, n) for v, n, _ in expected], failures
    for (_, _, error), (_, _, word) in zip(failures, expected, strict=True):
        assert word in error, failures
