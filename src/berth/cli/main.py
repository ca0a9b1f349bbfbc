"""The ``berth`` command: root group, connection options, subcommand groups.

Exit codes: 0 ok, 1 remote error, 2 usage or config error, 3 not found,
4 connection or authentication failure.
"""

from __future__ import annotations

import importlib
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import click

from berth.cli.state import CliState
from berth.client import DEFAULT_ADDR

# Each subcommand's module is imported when it is run (or listed by --help): `berth
# start-server` loads the daemon without the screens and renderers of the operator's commands.
SUBCOMMANDS = {
    "kernel": "berth.cli.groups:kernel",
    "agent": "berth.cli.groups:agent",
    "keys": "berth.cli.keys:keys",
    "config": "berth.cli.server:config",
    "start-server": "berth.cli.server:start_server",
    "image": "berth.cli.image:image_group",
    "events": "berth.cli.events:events_group",
    "watcher": "berth.cli.watcher:watcher_group",
}


class LazyGroup(click.Group):
    """A group whose subcommands (``name → "module:attribute"``) are imported on first use."""

    def __init__(self, *args: Any, lazy: Mapping[str, str], **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._lazy = dict(lazy)

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted({*super().list_commands(ctx), *self._lazy})

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        if cmd_name in self._lazy and cmd_name not in self.commands:
            module, _, attribute = self._lazy[cmd_name].partition(":")
            self.add_command(getattr(importlib.import_module(module), attribute), cmd_name)
        return super().get_command(ctx, cmd_name)


_KEYFILE = click.Path(exists=True, dir_okay=False, path_type=Path)


@click.group(cls=LazyGroup, lazy=SUBCOMMANDS,
             context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--addr", envvar="BERTH_ADDR", default=DEFAULT_ADDR, show_default=True,
              help="Agent RPC address (env BERTH_ADDR)")
@click.option("--server-key", envvar="BERTH_SERVER_KEY", type=_KEYFILE, default=None,
              help="Agent public key file (env BERTH_SERVER_KEY)")
@click.option("--client-keypair", envvar="BERTH_CLIENT_KEYPAIR", type=_KEYFILE, default=None,
              help="Our key pair file, *.key_secret (env BERTH_CLIENT_KEYPAIR)")
@click.option("--plain", is_flag=True, help="No CurveZMQ (agent in plain mode)")
@click.option("--timeout", type=float, default=30.0, show_default=True,
              help="Per-call timeout in seconds")
@click.option("--json", "as_json", is_flag=True, help="Print JSON for scripts")
@click.pass_context
def cli(ctx: click.Context, addr: str, server_key: Path | None, client_keypair: Path | None,
        plain: bool, timeout: float, as_json: bool) -> None:
    """Berth: a compute-node agent and the operator's tools to drive it."""
    state = ctx.ensure_object(CliState)
    state.addr, state.server_key, state.client_keypair = addr, server_key, client_keypair
    state.plain, state.timeout, state.as_json = plain, timeout, as_json or state.as_json


def main() -> None:
    cli(prog_name="berth")


if __name__ == "__main__":
    main()
