"""The ``berth`` command line (click)."""

from berth.cli.main import cli, main
from berth.cli.state import CliState

__all__ = ["CliState", "cli", "main"]
