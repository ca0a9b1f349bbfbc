"""``berth agent …``: the node's status and hardware."""

from __future__ import annotations

import click

from berth.cli import render, views
from berth.cli.kernel import kernels_of
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
    render.show(views.agent_status(result, kernels_of(result)))


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
    render.show(views.hwinfo(result))
