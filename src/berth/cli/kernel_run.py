"""``berth kernel exec|run``: run code in a live kernel, or in a kernel made for the run.

A run follows Backend.AI's protocol (reference §5.4): one ``execute`` in ``query`` or
``batch`` mode, then ``continue`` calls with a short flush timeout, streaming each reply's
console records, until the run reports ``finished`` or ``exec-timeout``. ``waiting-input``
is answered from the terminal with mode ``input``. The first Ctrl-C sends
``interrupt_kernel`` and keeps following the run to its end; a second one detaches.
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
import threading
import uuid
from collections.abc import Awaitable, Callable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol, TypeVar

import click

from berth.cli.kernel import find_kernel, kernel_request, kernel_shape_options
from berth.cli.spec import cluster_info, creation_config
from berth.cli.state import CliState, get_state, run_with_client
from berth.client import AgentClient
from berth.errors import KernelNotFound

__all__ = [
    "COMMANDS",
    "RunSpec",
    "SigintCounter",
    "Terminal",
    "console_writes",
    "exit_code_of",
    "follow_run",
]

T = TypeVar("T")

API_VERSION = 2
FLUSH_TIMEOUT = 0.5
TERMINAL_STATUSES = frozenset({"finished", "exec-timeout"})
STEP_STATUSES = {"clean-finished": "clean", "build-finished": "build"}
EXIT_DETACHED = 130


# ------------------------------------------------------------------ following a run

@dataclass(frozen=True)
class RunSpec:
    """What to start: ``mode`` is ``query`` (``code``) or ``batch`` (``opts`` clean/build/exec)."""

    mode: str
    code: str = ""
    opts: Mapping[str, Any] = field(default_factory=dict)


class Terminal(Protocol):
    """Where a run's output goes and where ``input()`` answers come from."""

    def write(self, stream: str, text: str) -> None: ...
    def read_input(self, is_password: bool) -> str | None: ...  # None: end of input


class ClickTerminal:
    """The user's terminal: stdout/stderr as they arrive, prompts through click (getpass)."""

    def write(self, stream: str, text: str) -> None:
        click.echo(text, nl=False, err=stream == "stderr")

    def read_input(self, is_password: bool) -> str | None:
        try:
            value: str = click.prompt("", prompt_suffix="", default="", show_default=False,
                                      hide_input=is_password)
        except click.Abort:
            return None
        return value


class SigintCounter:
    """Counts SIGINTs while installed on the running loop (instead of KeyboardInterrupt)."""

    def __init__(self) -> None:
        self.count = 0
        self.changed = asyncio.Event()

    def fire(self) -> None:
        self.count += 1
        self.changed.set()

    @contextlib.contextmanager
    def installed(self) -> Iterator[SigintCounter]:
        loop = asyncio.get_running_loop()
        try:
            loop.add_signal_handler(signal.SIGINT, self.fire)
        except (ValueError, RuntimeError):  # not the main thread: Ctrl-C keeps its default
            yield self
            return
        try:
            yield self
        finally:
            loop.remove_signal_handler(signal.SIGINT)


def console_writes(result: Mapping[str, Any]) -> list[tuple[str, str]]:
    """(stream, text) pairs for a NextResult's console (api v2) or stdout/stderr (api v1)."""
    if "console" not in result:
        return [(s, str(result[s])) for s in ("stdout", "stderr") if result.get(s)]
    writes = []
    for kind, data in result.get("console") or []:
        if kind in ("stdout", "stderr"):
            writes.append((str(kind), str(data)))
        elif kind == "media":
            mime, payload = (list(data) + ["", ""])[:2]
            writes.append(("stdout", f"[media {mime}: {len(str(payload))} chars]\n"))
        elif kind == "html":
            writes.append(("stdout", f"[html: {len(str(data))} chars]\n"))
    return writes


def exit_code_of(result: Mapping[str, Any]) -> int:
    """The process exit code a finished run maps to (1 for a timed-out run)."""
    if result.get("status") != "finished":
        return 1
    code = result.get("exitCode")
    return int(code) if isinstance(code, int) else 0


def _step_note(result: Mapping[str, Any], spec: RunSpec) -> str | None:
    step = STEP_STATUSES.get(str(result.get("status")))
    if step is None or not spec.opts.get(step):
        return None
    return f"berth: {step} finished with exit code {result.get('exitCode')}\n"


async def _read_line(term: Terminal, is_password: bool) -> str | None:
    """Read in a daemon thread so SIGINT stays live and a blocked read never holds exit."""
    loop = asyncio.get_running_loop()
    fut: asyncio.Future[str | None] = loop.create_future()

    def deliver(value: str | None) -> None:
        if not fut.done():
            fut.set_result(value)

    def work() -> None:
        try:
            value: str | None = term.read_input(is_password)
        except (OSError, UnicodeDecodeError):  # a broken terminal ends input like EOF does
            value = None
        with contextlib.suppress(RuntimeError):  # the loop closed while we waited
            loop.call_soon_threadsafe(deliver, value)

    threading.Thread(target=work, name="berth-input", daemon=True).start()
    return await fut


class Detached(Exception):
    """The user pressed Ctrl-C twice: stop following, leave the run to the kernel."""


class _Follower:
    def __init__(self, client: AgentClient, session_id: str, kernel_id: str, term: Terminal,
                 sigint: SigintCounter, flush_timeout: float) -> None:
        self.client, self.session_id, self.kernel_id = client, session_id, kernel_id
        self.term, self.sigint, self.flush_timeout = term, sigint, flush_timeout
        self.run_id = uuid.uuid4().hex
        self.handled = 0
        self.saw_eof = False

    async def call(self, mode: str, code: str = "", opts: Mapping[str, Any] | None = None
                   ) -> dict[str, Any]:
        return await self.client.execute(self.session_id, self.kernel_id, API_VERSION,
                                         self.run_id, mode, code, opts or {},
                                         self.flush_timeout)

    async def on_sigint(self) -> bool:
        """Handle new Ctrl-Cs: interrupt once; True when the user asked to detach."""
        if self.sigint.count <= self.handled:
            return False
        first, self.handled = self.handled == 0, self.sigint.count
        if not first:
            return True
        self.term.write("stderr", "berth: interrupting the kernel (Ctrl-C again to detach)\n")
        await self.client.interrupt_kernel(self.kernel_id)
        return False

    async def answer(self, options: Mapping[str, Any]) -> dict[str, Any] | None:
        """Read a line for ``input()``; None when Ctrl-C came first (already handled)."""
        self.sigint.changed.clear()
        reader = asyncio.ensure_future(_read_line(self.term, bool(options.get("is_password"))))
        waiter = asyncio.ensure_future(self.sigint.changed.wait())
        try:
            await asyncio.wait({reader, waiter}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            waiter.cancel()
        if not reader.done():
            reader.cancel()
            return None
        line = reader.result()
        if line is None and self.saw_eof:  # stdin is closed and the code keeps asking
            self.sigint.fire()
            return None
        self.saw_eof = self.saw_eof or line is None
        return await self.call("input", line or "")

    async def next(self, result: Mapping[str, Any]) -> dict[str, Any]:
        if result.get("status") == "waiting-input" and self.handled == 0:
            answered = await self.answer(result.get("options") or {})
            if answered is not None:
                return answered
            if await self.on_sigint():
                raise Detached
        return await self.call("continue")


async def follow_run(client: AgentClient, session_id: str, kernel_id: str, spec: RunSpec,
                     term: Terminal, sigint: SigintCounter,
                     flush_timeout: float = FLUSH_TIMEOUT) -> dict[str, Any]:
    """Start ``spec`` and follow it to its end; returns the last result (raises Detached)."""
    f = _Follower(client, session_id, kernel_id, term, sigint, flush_timeout)
    result = await f.call(spec.mode, spec.code, spec.opts)
    while True:
        for stream, text in console_writes(result):
            term.write(stream, text)
        note = _step_note(result, spec)
        if note:
            term.write("stderr", note)
        if result.get("status") in TERMINAL_STATUSES:
            return result
        if await f.on_sigint():
            raise Detached
        result = await f.next(result)


async def _follow_to_exit_code(client: AgentClient, session_id: str, kernel_id: str,
                               spec: RunSpec, term: Terminal, sigint: SigintCounter,
                               flush_timeout: float) -> int:
    try:
        result = await follow_run(client, session_id, kernel_id, spec, term, sigint,
                                  flush_timeout)
    except Detached:
        term.write("stderr", "berth: detached; the run may still be going in the kernel\n")
        return EXIT_DETACHED
    if result.get("status") == "exec-timeout":
        term.write("stderr", "berth: the run exceeded its time limit (exec-timeout)\n")
    return exit_code_of(result)


# ------------------------------------------------------------------ exec / run commands

def _run_spec(code: str | None, batch: bool, exec_cmd: str | None, build: str | None,
              clean: str | None, time_limit: float | None) -> RunSpec:
    extra: dict[str, Any] = {"exec_timeout": time_limit} if time_limit else {}
    if batch:
        if code or not exec_cmd:
            raise click.UsageError("--batch takes --exec CMD (and optional --build/--clean), "
                                   "not CODE")
        return RunSpec("batch", "", {"clean": clean or "", "build": build or "",
                                     "exec": exec_cmd, **extra})
    if exec_cmd or build or clean:
        raise click.UsageError("--exec/--build/--clean need --batch")
    if code is None:
        raise click.UsageError("give CODE to run (or --batch --exec CMD)")
    return RunSpec("query", code, extra)


F = TypeVar("F", bound=Callable[..., Any])


def _exec_options(func: F) -> F:
    options = [
        click.argument("code", required=False),
        click.option("--batch", is_flag=True, help="Batch mode: run shell commands"),
        click.option("--exec", "exec_cmd", default=None, metavar="CMD",
                     help="Batch: the command to run ('*' = main.py)"),
        click.option("--build", default=None, metavar="CMD", help="Batch: build command first"),
        click.option("--clean", default=None, metavar="CMD", help="Batch: clean command first"),
        click.option("--time-limit", type=float, default=None, metavar="SECONDS",
                     help="Stop the run after SECONDS (exec-timeout)"),
        click.option("--flush-timeout", type=float, default=FLUSH_TIMEOUT, show_default=True,
                     help="Seconds each call waits for output before returning it"),
    ]
    for option in reversed(options):
        func = option(func)
    return func


def _run_async(state: CliState, action: Callable[[AgentClient, SigintCounter], Awaitable[T]]
               ) -> T:
    """Like run_with_client, with Ctrl-C counted by the loop instead of raised."""
    async def go(client: AgentClient) -> T:
        with SigintCounter().installed() as sigint:
            return await action(client, sigint)

    return run_with_client(state, go)


@click.command("exec")
@click.argument("kernel_id")
@_exec_options
@click.pass_context
def exec_(ctx: click.Context, kernel_id: str, code: str | None, batch: bool,
          exec_cmd: str | None, build: str | None, clean: str | None,
          time_limit: float | None, flush_timeout: float) -> None:
    """Run CODE in a kernel, streaming its output; exit with the run's exit code."""
    spec = _run_spec(code, batch, exec_cmd, build, clean, time_limit)

    async def go(client: AgentClient, sigint: SigintCounter) -> int:
        row = await find_kernel(client, kernel_id)
        return await _follow_to_exit_code(client, str(row.get("session_id") or kernel_id),
                                          kernel_id, spec, ClickTerminal(), sigint,
                                          flush_timeout)

    ctx.exit(_run_async(get_state(ctx), go))


async def _destroy_quietly(client: AgentClient, kernel_id: str, session_id: str) -> None:
    with contextlib.suppress(KernelNotFound):
        await client.destroy_kernel(kernel_id, session_id, "user-requested")
    click.echo(f"berth: kernel {kernel_id} destroyed", err=True)


@click.command("run")
@kernel_shape_options
@_exec_options
@click.pass_context
def run(ctx: click.Context, image: str, cpu: str, mem: str, shmem: str | None,
        mounts: tuple[str, ...], envs: tuple[str, ...], code: str | None, batch: bool,
        exec_cmd: str | None, build: str | None, clean: str | None, time_limit: float | None,
        flush_timeout: float) -> None:
    """Create a kernel, run CODE in it, destroy it (always, also on error or Ctrl-C)."""
    spec = _run_spec(code, batch, exec_cmd, build, clean, time_limit)
    req = kernel_request(image, cpu, mem, shmem, mounts, envs, (), None, None)

    async def go(client: AgentClient, sigint: SigintCounter) -> int:
        click.echo(f"berth: creating kernel {req.kernel_id} ({image})", err=True)
        try:
            await client.create_kernels(req.session_id, [req.kernel_id],
                                        [creation_config(req)], cluster_info(), {})
            if sigint.count:
                return EXIT_DETACHED
            return await _follow_to_exit_code(client, req.session_id, req.kernel_id, spec,
                                              ClickTerminal(), sigint, flush_timeout)
        finally:
            await _destroy_quietly(client, req.kernel_id, req.session_id)

    ctx.exit(_run_async(get_state(ctx), go))


COMMANDS = [exec_, run]
