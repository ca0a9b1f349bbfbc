"""``berth keys generate``: a CurveZMQ key pair in ZeroMQ certificate format."""

from __future__ import annotations

from pathlib import Path

import click

from berth.cli import render
from berth.cli.state import get_state, json_option
from berth.rpc import generate_keypair


@click.group()
def keys() -> None:
    """CurveZMQ keys for the agent and its managers."""


@keys.command()
@click.option("--dir", "directory", required=True, type=click.Path(file_okay=False, path_type=Path),
              help="Directory to write into (created if missing)")
@click.option("--name", default="agent", show_default=True,
              help="Writes NAME.key (public) and NAME.key_secret")
@json_option
@click.pass_context
def generate(ctx: click.Context, directory: Path, name: str) -> None:
    """Generate a key pair: DIR/NAME.key and DIR/NAME.key_secret."""
    public, secret = generate_keypair(directory, name)
    secret.chmod(0o600)
    if get_state(ctx).as_json:
        render.emit_json({"public": str(public), "secret": str(secret)})
    else:
        click.echo(f"public key: {public}\nsecret key: {secret}")
