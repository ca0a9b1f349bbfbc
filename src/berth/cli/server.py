"""``berth config check`` and ``berth start-server`` (the daemon is wired in berth.daemon.server)."""

from __future__ import annotations

import sys
from pathlib import Path

import click

from berth.cli.state import EXIT_USAGE
from berth.errors import ConfigError

_FILE = click.Path(exists=True, dir_okay=False, path_type=Path)


@click.group()
def config() -> None:
    """Agent configuration."""


@config.command()
@click.option("-o", "--output", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="write here instead of standard output")
def sample(output: Path | None) -> None:
    """Print a sample agent.toml with every key and its default."""
    from berth.cli.config_sample import render_sample

    text = render_sample()
    if output is None:
        click.echo(text, nl=False)
    else:
        output.write_text(text)


@config.command()
@click.option("-f", "--file", "path", required=True, type=_FILE, help="agent.toml to check")
def check(path: Path) -> None:
    """Validate an agent.toml: print OK or the offending key path (exit 2)."""
    from berth.config import load_config  # lazy: the CLI works before the daemon is wired

    try:
        load_config(path)
    except ConfigError as exc:
        click.echo(f"{path}: {exc}", err=True)  # the message leads with the key path
        sys.exit(EXIT_USAGE)
    click.echo("OK")


@click.command("start-server")
@click.option("-f", "--file", "path", default=None, type=_FILE, help="agent.toml")
def start_server(path: Path | None) -> None:
    """Run the agent daemon in the foreground."""
    from berth.daemon import main as server_main

    sys.exit(server_main(path))
