"""The watcher's HTTP API (aiohttp): agent status and start/stop/restart/reset, token-guarded.

``GET /`` answers the agent's status, its process (state, RSS, CPU) and the node's kernel
containers (counted through Docker, so also while the agent is down).

Every request must carry ``X-BackendAI-Watcher-Token`` equal to the configured token:
missing → 401, wrong → 403 (compared in constant time).
"""

from __future__ import annotations

import hmac
import logging
from collections.abc import Awaitable, Callable
from typing import Any

from aiohttp import web

from berth.watcher.kernels import KernelCounter
from berth.watcher.procstat import ProcessSampler
from berth.watcher.supervisor import AgentSupervisor

log = logging.getLogger(__name__)

TOKEN_HEADER = "X-BackendAI-Watcher-Token"
SUPERVISOR: web.AppKey[AgentSupervisor] = web.AppKey("supervisor", AgentSupervisor)
SAMPLER: web.AppKey[ProcessSampler] = web.AppKey("sampler", ProcessSampler)
KERNELS: web.AppKey[KernelCounter | None] = web.AppKey("kernels")
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def _token_middleware(token: str) -> Any:
    expected = token.encode()

    @web.middleware
    async def check(request: web.Request, handler: Handler) -> web.StreamResponse:
        given = request.headers.get(TOKEN_HEADER)
        if given is None:
            return web.json_response({"error": "missing watcher token"}, status=401)
        if not hmac.compare_digest(given.encode(), expected):
            log.warning("watcher: wrong token from %s", request.remote)
            return web.json_response({"error": "invalid watcher token"}, status=403)
        return await handler(request)
    return check


def _state(sup: AgentSupervisor, **extra: Any) -> dict[str, Any]:
    return {"agent-status": sup.status.value, "watcher-status": "active",
            "agent-pid": sup.pid, "agent-exit-code": sup.exit_code, "agent-starts": sup.starts,
            **extra}


async def get_status(request: web.Request) -> web.Response:
    sup = request.app[SUPERVISOR]
    extra: dict[str, Any] = {"agent-process": request.app[SAMPLER].report(sup.pid)}
    counter = request.app[KERNELS]
    if counter is not None:
        extra["kernels"] = await counter()
    return web.json_response(_state(sup, **extra))


async def post_start(request: web.Request) -> web.Response:
    sup = request.app[SUPERVISOR]
    started = await sup.start()
    return web.json_response(_state(sup, result="started" if started else "already-running"))


async def post_stop(request: web.Request) -> web.Response:
    sup = request.app[SUPERVISOR]
    stopped = await sup.stop()
    return web.json_response(_state(sup, result="stopped" if stopped else "not-running"))


async def post_restart(request: web.Request) -> web.Response:
    sup = request.app[SUPERVISOR]
    await sup.restart()
    return web.json_response(_state(sup, result="restarted"))


async def post_soft_reset(request: web.Request) -> web.Response:
    sup = request.app[SUPERVISOR]
    return web.json_response(_state(sup, result=await sup.soft_reset()))


async def post_hard_reset(request: web.Request) -> web.Response:
    sup = request.app[SUPERVISOR]
    await sup.hard_reset()
    return web.json_response(_state(sup, result="restarted"))


def make_app(supervisor: AgentSupervisor, token: str,
             kernels: KernelCounter | None = None) -> web.Application:
    if not token:
        raise ValueError("the watcher needs a non-empty token")
    app = web.Application(middlewares=[_token_middleware(token)])
    app[SUPERVISOR] = supervisor
    app[SAMPLER] = ProcessSampler()
    app[KERNELS] = kernels
    app.router.add_get("/", get_status)
    app.router.add_post("/agent/start", post_start)
    app.router.add_post("/agent/stop", post_stop)
    app.router.add_post("/agent/restart", post_restart)
    app.router.add_post("/soft-reset", post_soft_reset)
    app.router.add_post("/hard-reset", post_hard_reset)
    return app
