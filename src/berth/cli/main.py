"""The ``berth`` command: root group, connection options, subcommand groups.

Exit codes: 0 ok, 1 remote error, 2 usage or config error, 3 not found,
4 connection or authentication failure.
"""

from __future__ import annotations

from pathlib import Path

import click

from berth.cli.agent import agent
from berth.cli.events import events_group
from berth.cli.image import image_group
from berth.cli.kernel import kernel
from berth.cli.kernel_files import COMMANDS as KERNEL_FILES_COMMANDS
from berth.cli.kernel_run import COMMANDS as KERNEL_RUN_COMMANDS
from berth.cli.kernel_services import COMMANDS as KERNEL_SERVICE_COMMANDS
from berth.cli.keys import keys
from berth.cli.server import config, start_server
from berth.cli.state import CliState
from berth.cli.top import agent_top, kernel_top
from berth.cli.watcher import watcher_group
from berth.client import DEFAULT_ADDR

_KEYFILE = click.Path(exists=True, dir_okay=False, path_type=Path)


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
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


for _command in (*KERNEL_RUN_COMMANDS, *KERNEL_FILES_COMMANDS, *KERNEL_SERVICE_COMMANDS,
                 kernel_top):
    kernel.add_command(_command)
agent.add_command(agent_top)
cli.add_command(kernel)
cli.add_command(agent)
cli.add_command(keys)
cli.add_command(config)
cli.add_command(start_server)
cli.add_command(image_group)
cli.add_command(events_group)
cli.add_command(watcher_group)


def main() -> None:
    cli(prog_name="berth")


if __name__ == "__main__":
    main()
