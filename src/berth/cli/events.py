"""``berth events tail``: follow the event stream the agent writes to Redis."""

from __future__ import annotations

import asyncio
import json
from datetime import datetime
from typing import TYPE_CHECKING, Any

import click

from berth.errors import EventBusError

if TYPE_CHECKING:
    from berth.events import StreamEntry


def _payload_text(payload: str) -> str:
    try:
        value: Any = json.loads(payload)
    except ValueError:
        return payload
    if isinstance(value, dict):
        return " ".join(f"{k}={json.dumps(v) if isinstance(v, (dict, list)) else v}"
                        for k, v in value.items())
    return payload if value is None else json.dumps(value)


def event_line(entry: StreamEntry) -> str:
    """``2026-12-01 10:09:55.123  kernel_started  SOURCE  key=value ...`` (logfmt, as
    ``docker events`` prints them): the time the stream entry was added, from its id."""
    millis, _, _seq = entry.entry_id.partition("-")
    try:
        when = datetime.fromtimestamp(int(millis) / 1000).strftime("%Y-%m-%d %H:%M:%S.%f")[:-3]
    except ValueError:
        when = entry.entry_id
    return f"{when}  {entry.name:<22}  {entry.source}  {_payload_text(entry.payload)}".rstrip()


async def _tail(redis_url: str, from_start: bool, count: int | None, as_json: bool) -> None:
    from berth.events import tail_events  # Redis: loaded by this command only

    seen = 0
    async for entry in tail_events(redis_url, from_start=from_start):
        if as_json:
            click.echo(json.dumps({"id": entry.entry_id, "name": entry.name,
                                   "source": entry.source, "payload": json.loads(entry.payload)}))
        else:
            click.echo(event_line(entry))
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
