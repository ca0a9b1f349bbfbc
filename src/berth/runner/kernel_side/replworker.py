"""The REPL worker: a child interpreter that keeps user globals across query runs.

Standard library only, Python >= 3.8. Spawned by the runner as
`python krunner.py --repl-worker CMD_FD EVT_FD` (krunner.py is the kernel side's only script); its stdout/stderr are pipes the runner reads.
Commands (runner -> worker, on CMD_FD): {"op": "exec", "code"}, {"op": "input", "text"},
{"op": "complete", "text"}. Events (worker -> runner, on EVT_FD): {"ev": "ready"},
{"ev": "finished", "exitCode"}, {"ev": "waiting-input", "is_password"},
{"ev": "media", "mime", "data"}, {"ev": "html", "data"}, {"ev": "completion", "suggestions"}.
Before every event the worker flushes stdout/stderr, and the runner drains the output pipes
before handling it; html/media events wait for {"op": "ack"}, so output written after them
cannot be read before them (the other events leave the worker waiting anyway).
SIGINT raises KeyboardInterrupt only while user code runs; the worker and its globals survive.
"""

from __future__ import annotations

import ast
import builtins
import getpass
import io
import os
import re
import signal
import sys
import traceback

TYPE_CHECKING = False  # the worker starts before a kernel's first run: only what it needs
if TYPE_CHECKING:
    from typing import Any

from . import protocol

# User code must not import the runner's own modules by accident: off sys.path go the runner's
# directory (the script's, there when Python runs without -I) and its parent (krunner.py's
# path setup), and on goes the working directory, as for `python -c`.
_HERE = os.path.dirname(os.path.abspath(__file__))
_RUNNER_PATHS = (_HERE, os.path.dirname(_HERE))
sys.path[:] = [p for p in sys.path if os.path.abspath(p or ".") not in _RUNNER_PATHS]
sys.path.insert(0, "")

MAX_SUGGESTIONS = 200
_TOKEN_TAIL = re.compile(r"[\w.]*$")


class Channel:
    """Blocking framed channel to the runner."""

    def __init__(self, cmd_fd: int, evt_fd: int) -> None:
        self._cmd_fd = cmd_fd
        self._evt_fd = evt_fd
        self._decoder = protocol.FrameDecoder()
        self._inbox: list[dict[str, Any]] = []

    def send(self, message: dict[str, Any]) -> None:
        flush_std()
        data = protocol.encode_frame(message)
        while data:
            written = os.write(self._evt_fd, data)
            data = data[written:]

    def recv(self) -> dict[str, Any] | None:
        while not self._inbox:
            chunk = os.read(self._cmd_fd, 65536)
            if not chunk:
                return None
            self._inbox.extend(self._decoder.feed(chunk))
        return self._inbox.pop(0)


class Worker:
    def __init__(self, channel: Channel) -> None:
        self.channel = channel
        self.busy = False
        self.namespace: dict[str, Any] = {
            "__name__": "__main__", "__builtins__": builtins,
            "display_html": self.display_html, "display_media": self.display_media,
        }

    # helpers offered to user code -------------------------------------------------------------
    def display_html(self, html: str) -> None:
        self._send_acked({"ev": "html", "data": str(html)})

    def display_media(self, mime: str, data: str) -> None:
        self._send_acked({"ev": "media", "mime": str(mime), "data": str(data)})

    def _send_acked(self, event: dict[str, Any]) -> None:
        """Wait until the runner has placed the event, so later output cannot overtake it."""
        self.channel.send(event)
        while True:
            message = self.channel.recv()
            if message is None:
                raise EOFError("runner went away")
            if message.get("op") == "ack":
                return

    def read_input(self, prompt: str = "", is_password: bool = False) -> str:
        if prompt:
            sys.stdout.write(str(prompt))
        self.channel.send({"ev": "waiting-input", "is_password": is_password})
        while True:
            message = self.channel.recv()
            if message is None:
                raise EOFError("runner went away")
            if message.get("op") == "input":
                return str(message.get("text", ""))

    # running code -------------------------------------------------------------------------
    def on_sigint(self, signum: int, frame: Any) -> None:
        if self.busy:
            raise KeyboardInterrupt

    def run_code(self, code: str) -> int:
        self.busy = True
        try:
            self._exec(code)
            return 0
        except SystemExit as exc:
            return exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
        except KeyboardInterrupt:
            self.busy = False
            traceback.print_exc()
            return 130
        except BaseException:  # noqa: BLE001 - any error of user code is reported, not fatal
            self.busy = False
            etype, value, tb = sys.exc_info()
            traceback.print_exception(etype, value, tb.tb_next if tb else None)
            return 1
        finally:
            self.busy = False

    def _exec(self, code: str) -> None:
        tree = ast.parse(code, "<cell>", "exec")
        last = tree.body[-1] if tree.body else None
        if isinstance(last, ast.Expr):
            tree.body.pop()
            exec(compile(tree, "<cell>", "exec"), self.namespace)
            interactive = ast.Interactive(body=[last])
            exec(compile(interactive, "<cell>", "single"), self.namespace)
        else:
            exec(compile(tree, "<cell>", "exec"), self.namespace)

    def complete(self, text: str) -> list[str]:
        token = _TOKEN_TAIL.search(text or "")
        prefix = token.group(0) if token else ""
        import rlcompleter  # ~6 ms (it imports inspect): paid by the first completion only

        completer = rlcompleter.Completer(self.namespace)
        found: list[str] = []
        for state in range(MAX_SUGGESTIONS):
            try:
                match = completer.complete(prefix, state)
            except Exception:  # noqa: BLE001 - a failing __getattr__ of user objects
                break
            if match is None:
                break
            if match not in found:
                found.append(match)
        return found

    def serve(self) -> None:
        self.channel.send({"ev": "ready", "pid": os.getpid()})
        while True:
            message = self.channel.recv()
            if message is None:
                return
            op = message.get("op")
            if op == "exec":
                exit_code = self.run_code(str(message.get("code", "")))
                self.channel.send({"ev": "finished", "exitCode": exit_code})
            elif op == "complete":
                suggestions = self.complete(str(message.get("text", "")))
                self.channel.send({"ev": "completion", "suggestions": suggestions})


class InputStream(io.TextIOBase):
    """sys.stdin for user code: each read asks the agent for a line of input."""

    def __init__(self, worker: Worker) -> None:
        self._worker = worker

    def readable(self) -> bool:
        return True

    def readline(self, size: int | None = -1) -> str:  # type: ignore[override]
        return self._worker.read_input() + "\n"

    def read(self, size: int | None = -1) -> str:
        return self.readline()


def flush_std() -> None:
    for stream in (sys.stdout, sys.stderr, sys.__stdout__, sys.__stderr__):
        try:
            if stream is not None:
                stream.flush()
        except (OSError, ValueError):
            pass


def _std_stream(fd: int) -> io.TextIOWrapper:
    raw = io.FileIO(fd, "w", closefd=False)
    return io.TextIOWrapper(io.BufferedWriter(raw), encoding="utf-8",
                            errors="backslashreplace", line_buffering=True)


def install(worker: Worker) -> None:
    sys.stdout = _std_stream(1)
    sys.stderr = _std_stream(2)
    sys.stdin = InputStream(worker)
    builtins.input = lambda prompt="": worker.read_input(str(prompt))
    getpass.getpass = lambda prompt="Password: ", stream=None: worker.read_input(
        str(prompt), is_password=True)
    signal.signal(signal.SIGINT, worker.on_sigint)


def main(argv: list[str]) -> int:
    channel = Channel(int(argv[1]), int(argv[2]))
    worker = Worker(channel)
    install(worker)
    worker.serve()
    return 0

