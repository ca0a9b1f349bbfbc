"""The judge can say no: scripts/mq.py's ManagerQueue over a Redis with no agent, fed raw
entries and messages in shapes the 26.9.6 manager accepts and in shapes it rejects (the
mismatches Berth once had: a nested broadcast payload, a kernel_terminated reason outside
KernelLifecycleEventReason, kernel_started without used_devices.units, a stream entry without
``source``). Prints what ManagerQueue decoded and what it recorded as failures.
"""

from __future__ import annotations

import asyncio
import json
import uuid
from typing import Any

import redis.asyncio as aioredis
from ai.backend.common.defs import REDIS_STREAM_DB
from harness import env, main
from mq import CHANNEL, STREAM, ManagerQueue


def body_json(**fields: Any) -> str:
    return json.dumps(fields)


async def run() -> dict[str, Any]:
    host, port = env("BERTH_REDIS_ADDR").rsplit(":", 1)
    raw = aioredis.Redis(host=host, port=int(port), db=REDIS_STREAM_DB)
    kid, sid = str(uuid.uuid4()), str(uuid.uuid4())
    good = body_json(kernel_id=kid, session_id=sid, reason="user-requested", exit_code=0)
    bad_reason = body_json(kernel_id=kid, session_id=sid, reason="oom-killed", exit_code=137)
    no_units = body_json(kernel_id=kid, session_id=sid, reason="", creation_info={
        "container_id": "c", "kernel_host": "127.0.0.1", "repl_in_port": 0, "repl_out_port": 0,
        "service_ports": [], "used_devices": {}})
    async with ManagerQueue() as mq:
        await asyncio.sleep(0.5)  # the subscription is live
        await raw.xadd(STREAM, {"name": "kernel_terminated", "source": "n", "payload": good})
        await raw.xadd(STREAM, {"name": "kernel_terminated", "source": "n",
                                "payload": bad_reason})
        await raw.xadd(STREAM, {"name": "kernel_started", "source": "n", "payload": no_units})
        await raw.xadd(STREAM, {"name": "kernel_terminated", "payload": good})  # no source
        await raw.publish(CHANNEL, json.dumps({"name": "kernel_terminated", "source": "n",
                                               "payload": good}))
        await raw.publish(CHANNEL, json.dumps({"name": "kernel_terminated", "source": "n",
                                               "payload": json.loads(good)}))  # nested
        await asyncio.sleep(1.0)
        await mq.drain()
        await raw.aclose()
        return {
            "anycast_ok": [e["name"] for e in mq.anycast if "error" not in e],
            "broadcast_ok": [e["name"] for e in mq.broadcast if "error" not in e],
            "failures": [{"via": f["via"], "name": f.get("name"), "error": f["error"][:300]}
                         for f in mq.failures()],
        }


if __name__ == "__main__":
    main(run, timeout=60)
