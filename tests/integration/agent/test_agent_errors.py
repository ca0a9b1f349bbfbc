"""Issue 12 item 7a through the wired agent: failures the Manager should see reach the `events`
stream of a real redis-server as `agent_error` (a compute plugin that fails to init, a plugin
whose measures fail — reported once, not every stats cycle)."""

from __future__ import annotations

import asyncio

import pytest

from .conftest import AgentFactory, RedisServer
from .test_redis_events_agent import StreamWatcher

AGENT = 'allow-compute-plugins = ["cpu", "mem", "mock"]'


def toml(server: RedisServer, mock: str) -> str:
    return (f"{server.toml}[debug]\nheartbeat-interval = 0.5\nstats-interval = 0.3\n"
            f"[plugins.mock]\ncount = 2\n{mock}\n")


def errors(watch: StreamWatcher) -> list[dict[str, object]]:
    return [e.payload for e in watch.entries if e.name == "agent_error"]


@pytest.mark.timeout(90)
async def test_a_plugin_that_fails_to_init_is_an_agent_error_and_the_node_runs_on(
        agent_factory: AgentFactory, redis_server: RedisServer) -> None:
    agent = await agent_factory(toml(redis_server, 'fail-init = "no devices answer"'),
                                agent_toml=AGENT)
    watch = StreamWatcher(redis_server)
    await watch.until(lambda: errors(watch), 10, "an agent_error")
    (error,) = errors(watch)
    assert error["severity"] == "ERROR"
    assert "mock" in str(error["message"]) and "no devices answer" in str(error["message"])
    assert error["context_env"] == {"source": "plugin", "plugin": "mock", "stage": "load"}
    assert "PluginError" in str(error["traceback"])
    source = [e.source for e in watch.entries if e.name == "agent_error"]
    assert source == [agent.agent_id]
    # The manager skips events of a node it does not know: the heartbeat comes first.
    names = [e.name for e in watch.entries]
    assert names.index("agent_heartbeat") < names.index("agent_error")
    async with agent.client() as c:
        status = await c.get_status()
    assert status["ready"] and "mock.device" not in status["slots"]["total"], status["slots"]


@pytest.mark.timeout(90)
async def test_failing_plugin_measures_are_one_agent_error_not_one_per_cycle(
        agent_factory: AgentFactory, redis_server: RedisServer) -> None:
    agent = await agent_factory(toml(redis_server, 'fail-measures = "NVML lost the bus"'),
                                agent_toml=AGENT)
    watch = StreamWatcher(redis_server)
    await watch.until(lambda: errors(watch), 10, "an agent_error")
    await asyncio.sleep(3)  # ten stats cycles more
    await watch.poll()
    (error,) = errors(watch)
    assert "NVML lost the bus" in str(error["message"])
    assert error["context_env"] == {"source": "plugin", "plugin": "mock", "stage": "measures"}
    async with agent.client() as c:
        status = await c.get_status()
    assert status["slots"]["total"]["mock.device"] in ("2", "2.00")  # loaded, still allocatable
