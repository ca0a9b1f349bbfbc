"""The e2e tier's user: Backend.AI's own client SDK (backend.ai-client 26.9.6) talking to the
manager's REST API, as a user of a Backend.AI cluster would.

Runs inside berth/bai-compat (Python 3.13), never on the host; the endpoint and keypair come
from BACKEND_ENDPOINT / BACKEND_ACCESS_KEY / BACKEND_SECRET_KEY (the client's own variables).
Usage: bai.py COMMAND [ARGS...]; the result is one JSON object on the last stdout line.
Anything raised ends the script non-zero with its traceback on stderr.

Sessions are destroyed without ``forced``; ``destroy`` waits for TERMINATED and reports the
statuses the session went through.
"""

from __future__ import annotations

import asyncio
import json
import sys
import time
from collections.abc import Awaitable, Callable
from typing import Any

from ai.backend.client.session import AsyncSession
from ai.backend.common.types import ClusterMode

IMAGE = "local/berth/python:3.11"
RESOURCES = {"cpu": 1, "mem": "512m"}

Api = AsyncSession
Command = Callable[[Api, list[str]], Awaitable[dict[str, Any]]]


def emit(result: dict[str, Any]) -> None:
    print(json.dumps(result, default=str), flush=True)


async def gql(api: Api, query: str, variables: dict[str, Any] | None = None) -> dict[str, Any]:
    result: dict[str, Any] = await api.Admin._query(query, variables or {})
    return result


SESSION_Q = """query($id: UUID!) { compute_session(id: $id) {
  id name status status_info status_data result service_ports agent_ids
  kernels: containers { kernel_id cluster_role cluster_idx cluster_hostname status status_info
                        status_data agent container_id } } }"""


async def session_state(api: Api, session_id: str) -> dict[str, Any]:
    data = await gql(api, SESSION_Q, {"id": session_id})
    state: dict[str, Any] = data["compute_session"]
    return state


async def wait_status(api: Api, session_id: str, wanted: set[str], timeout: float
                      ) -> tuple[dict[str, Any], list[str]]:
    """Poll until the session's status is in ``wanted``; the statuses seen on the way."""
    seen: list[str] = []
    deadline = time.monotonic() + timeout
    while True:
        state = await session_state(api, session_id)
        if not seen or seen[-1] != state["status"]:
            seen.append(state["status"])
        if state["status"] in wanted:
            return state, seen
        if time.monotonic() > deadline:
            raise SystemExit(f"session {session_id} stuck in {state['status']} after {timeout} s"
                             f" (seen {seen}): {json.dumps(state, default=str)}")
        await asyncio.sleep(0.5)


async def execute(api: Api, name: str, code: str) -> dict[str, Any]:
    """Run ``code`` in the session's main kernel (query mode) to the end: console and exit."""
    sess = api.ComputeSession(name)
    run_id = f"e2e{time.monotonic_ns()}"
    result = await sess.execute(run_id, code, mode="query")
    console = list(result.get("console") or [])
    while result["status"] in ("continued", "waiting-input"):
        result = await sess.execute(run_id, "", mode="continue")
        console += result.get("console") or []
    return {"status": result["status"], "exit_code": result.get("exitCode"),
            "stdout": "".join(str(item[1]) for item in console if item[0] == "stdout"),
            "stderr": "".join(str(item[1]) for item in console if item[0] == "stderr")}


# ───────────────────────────────────────────────────────────────── commands


async def agents(api: Api, _args: list[str]) -> dict[str, Any]:
    data = await gql(api, """query { agent_list(limit: 50, offset: 0) { items {
        id status scaling_group available_slots occupied_slots addr architecture } } }""")
    return {"agents": data["agent_list"]["items"]}


async def create(api: Api, args: list[str]) -> dict[str, Any]:
    """create NAME [interactive|batch] [STARTUP_COMMAND] [CLUSTER_SIZE]"""
    name, kind = args[0], (args[1] if len(args) > 1 else "interactive")
    command = args[2] if len(args) > 2 and args[2] else None
    size = int(args[3]) if len(args) > 3 else 1
    sess = await api.ComputeSession.get_or_create(
        IMAGE, name=name, type_=kind, startup_command=command, resources=RESOURCES,
        cluster_size=size, cluster_mode=ClusterMode.SINGLE_NODE, max_wait=120,
        no_reuse=True)
    session_id = str(sess.id)
    state, seen = await wait_status(api, session_id, {"RUNNING", "TERMINATED", "CANCELLED",
                                                      "ERROR"}, 60)
    return {"session_id": session_id, "status": state["status"], "seen": seen, "state": state}


async def run(api: Api, args: list[str]) -> dict[str, Any]:
    """run NAME CODE [RETRY_SECONDS]: with RETRY_SECONDS, a refused call is retried that long
    (the manager's agent pool refuses calls to an agent whose last 30-second ping failed,
    e.g. while the agent restarted); the errors seen are reported."""
    deadline = time.monotonic() + (float(args[2]) if len(args) > 2 else 0)
    errors: list[str] = []
    while True:
        try:
            result = await execute(api, args[0], args[1])
        except Exception as exc:
            errors.append(f"{type(exc).__name__}: {exc}")
            if time.monotonic() > deadline:
                raise
            await asyncio.sleep(2)
        else:
            return {**result, "errors": errors}


async def status(api: Api, args: list[str]) -> dict[str, Any]:
    """status SESSION_ID"""
    return {"state": await session_state(api, args[0])}


async def wait(api: Api, args: list[str]) -> dict[str, Any]:
    """wait SESSION_ID STATUS[,STATUS...] TIMEOUT"""
    state, seen = await wait_status(api, args[0], set(args[1].split(",")), float(args[2]))
    return {"status": state["status"], "seen": seen, "state": state}


async def destroy(api: Api, args: list[str]) -> dict[str, Any]:
    """destroy NAME SESSION_ID: a normal (not forced) destroy, then wait for TERMINATED."""
    reply = await api.ComputeSession(args[0]).destroy(forced=False)
    state, seen = await wait_status(api, args[1], {"TERMINATED", "ERROR", "CANCELLED"}, 120)
    return {"reply": reply, "status": state["status"], "seen": seen, "state": state}


async def apps(api: Api, args: list[str]) -> dict[str, Any]:
    """apps NAME: the manager's app listing for the session."""
    listing = await api.ComputeSession(args[0]).stream_app_info()
    return {"apps": list(listing)}


async def start_service(api: Api, args: list[str]) -> dict[str, Any]:
    """start-service NAME APP: the manager starts APP in the kernel (agent RPC start_service)
    and registers it with the resource group's app proxy."""
    reply = await api.ComputeSession(args[0]).start_service(args[1])
    return {"reply": dict(reply)}


COMMANDS: dict[str, Command] = {
    "agents": agents, "create": create, "run": run, "status": status, "wait": wait,
    "destroy": destroy, "apps": apps, "start-service": start_service,
}


async def main(argv: list[str]) -> None:
    command = COMMANDS[argv[0]]
    async with AsyncSession() as api:
        emit(await command(api, argv[1:]))


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1:]))
