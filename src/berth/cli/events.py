"""``berth events tail``: follow the event stream the agent writes to Redis."""

from __future__ import annotations

import asyncio
import json

import click

from berth.errors import EventBusError
from berth.events.bus import tail_events


async def _tail(redis_url: str, from_start: bool, count: int | None, as_json: bool) -> None:
    seen = 0
    async for entry in tail_events(redis_url, from_start=from_start):
        if as_json:
            click.echo(json.dumps({"id": entry.entry_id, "name": entry.name,
                                   "source": entry.source, "payload": json.loads(entry.payload)}))
        else:
            click.echo(f"{entry.entry_id} {entry.source} {entry.name} {entry.payload}")
        seen += 1
        if count is not None and seen >= count:
            return


@click.group("events")
def events_group() -> None:
    """Events published for the Manager."""


@events_group.command("tail")
@click.option("--redis-url", default="redis://127.0.0.1:6379/4", show_default=True,
              envvar="BERTH_EVENTS_REDIS_URL", help="Redis URL of the stream role (DB 4)")
@click.option("--from-start", is_flag=True, help="print the events already in the stream first")
@click.option("-n", "--count", type=int, default=None, help="stop after N events")
@click.option("--json", "as_json", is_flag=True, help="one JSON object per line")
def tail_cmd(redis_url: str, from_start: bool, count: int | None, as_json: bool) -> None:
    """Print events from the `events` stream as they arrive (Ctrl-C to stop)."""
    try:
        asyncio.run(_tail(redis_url, from_start, count, as_json))
    except EventBusError as exc:
        raise click.ClickException(str(exc)) from exc
    except KeyboardInterrupt:
        pass
