"""``berth agent …``: the node's status and hardware."""

from __future__ import annotations

from typing import Any

import click

from berth.cli import render
from berth.cli.kernel import COLUMNS, kernels_of
from berth.cli.state import get_state, json_option, run_with_client


@click.group()
def agent() -> None:
    """Inspect the agent."""


@agent.command()
@json_option
@click.pass_context
def status(ctx: click.Context) -> None:
    """The agent's status and its kernels."""
    state = get_state(ctx)
    result = run_with_client(state, lambda c: c.get_status())
    if state.as_json:
        render.emit_json(result)
        return
    summary = {k: v for k, v in result.items() if k != "kernels"}
    info: Any = summary.pop("agent", None)
    render.mapping({**(info if isinstance(info, dict) else {}), **summary}, title="agent")
    render.table(kernels_of(result), COLUMNS, title="kernels")


@agent.command()
@json_option
@click.pass_context
def hwinfo(ctx: click.Context) -> None:
    """Hardware status reported by each compute plugin."""
    state = get_state(ctx)
    result = run_with_client(state, lambda c: c.gather_hwinfo())
    if state.as_json:
        render.emit_json(result)
        return
    rows = [{"device": name, **(info if isinstance(info, dict) else {"status": info})}
            for name, info in result.items()]
    render.table(rows, [("device", "DEVICE"), ("status", "STATUS"),
                        ("status_info", "INFO"), ("metadata", "METADATA")])
