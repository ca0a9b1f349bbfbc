"""What the root command collects (connection options, output mode) and how commands run."""

from __future__ import annotations

import asyncio
import sys
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NoReturn, TypeVar

import click

from berth.client import DEFAULT_ADDR, AgentClient, load_client_keys
from berth.errors import (
    AgentUnreachable,
    AuthenticationFailed,
    BerthError,
    ConfigError,
    ContainerNotFound,
    KernelNotFound,
    RPCTimeout,
)

EXIT_OK = 0
EXIT_REMOTE = 1
EXIT_USAGE = 2
EXIT_NOT_FOUND = 3
EXIT_CONNECTION = 4

T = TypeVar("T")


@dataclass
class CliState:
    addr: str = DEFAULT_ADDR
    server_key: Path | None = None
    client_keypair: Path | None = None
    plain: bool = False
    as_json: bool = False
    timeout: float = 30.0
    client_factory: Callable[[CliState], AgentClient] | None = None  # tests inject fakes

    def client(self) -> AgentClient:
        if self.client_factory is not None:
            return self.client_factory(self)
        if self.plain:
            return AgentClient(self.addr, timeout=self.timeout)
        if self.server_key is None or self.client_keypair is None:
            raise click.UsageError("give --server-key and --client-keypair (CurveZMQ), "
                                   "or --plain for an agent running without auth")
        server_key, pair = load_client_keys(self.server_key, self.client_keypair)
        return AgentClient(self.addr, server_key, pair, timeout=self.timeout)


def exit_code(exc: BerthError) -> int:
    if isinstance(exc, (KernelNotFound, ContainerNotFound)):
        return EXIT_NOT_FOUND
    if isinstance(exc, (AgentUnreachable, AuthenticationFailed, RPCTimeout)):
        return EXIT_CONNECTION
    if isinstance(exc, ConfigError):
        return EXIT_USAGE
    return EXIT_REMOTE


def fail(exc: BerthError) -> NoReturn:
    click.echo(f"error: {type(exc).__name__}: {exc}", err=True)
    sys.exit(exit_code(exc))


def run_with_client(state: CliState, action: Callable[[AgentClient], Awaitable[T]]) -> T:
    """Connect, run ``action``, and turn Berth errors into a message and an exit code."""
    async def go() -> T:
        async with state.client() as client:
            return await action(client)

    try:
        return asyncio.run(go())
    except BerthError as exc:
        fail(exc)


def get_state(ctx: click.Context) -> CliState:
    state = ctx.find_object(CliState)
    return state if state is not None else ctx.ensure_object(CliState)

F = TypeVar("F", bound=Callable[..., Any])


def json_option(func: F) -> F:
    """``--json`` on a leaf command (same as the root's ``--json``)."""
    def callback(ctx: click.Context, _param: click.Parameter, value: bool) -> None:
        if value:
            get_state(ctx).as_json = True

    decorated: F = click.option("--json", "as_json", is_flag=True, expose_value=False,
                                callback=callback, help="Print JSON for scripts")(func)
    return decorated
