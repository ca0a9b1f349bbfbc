"""A private Docker engine for tests that restart the engine: its own ``dockerd`` (and the
containerd it manages) with its own data root, exec root, pid file, unix socket and bridge, so
that the machine's engine, which other tests use at the same time, is never touched.

No iptables rules, no masquerading, no live-restore (stopping the engine stops its containers);
the bridge is a Linux bridge made here with an address in 10.23x.y.0/24. Stopped by PID
(SIGTERM, then SIGKILL); :meth:`PrivateDockerd.destroy` also kills what the engine left (the
containerd-shim children), unmounts what is left under its roots and removes the bridge and
the directories. Nothing skips: a missing binary or an engine that does not answer fails.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import time
from pathlib import Path

import pytest

from .procs import binary, tail, wait_until


def _pids_mentioning(text: str) -> list[int]:
    """Processes whose command line contains ``text`` (the shims of a private engine name its
    containerd socket, under the engine's exec root)."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        if text in cmdline:
            found.append(int(entry.name))
    return found


def _cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
    except OSError:
        return "(gone)"


def mounts_under(root: Path) -> list[str]:
    """Mount points at or below ``root`` (from /proc/self/mountinfo, deepest first)."""
    prefix = str(root.resolve())
    points = []
    for line in Path("/proc/self/mountinfo").read_text().splitlines():
        point = line.split()[4].replace("\\040", " ")
        if point == prefix or point.startswith(prefix + "/"):
            points.append(point)
    return sorted(points, key=len, reverse=True)


class PrivateDockerd:
    """``dockerd`` under ``root`` (kept short: unix socket paths are limited to 108 bytes)."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.bridge = f"bch{os.getpid() % 100000}"
        self.subnet = f"10.{230 + os.getpid() % 20}.{os.getpid() % 250}.1/24"
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def socket(self) -> Path:
        return self.root / "docker.sock"

    @property
    def host(self) -> str:
        """The ``DOCKER_HOST`` / ``[container] docker-host`` value for this engine."""
        return f"unix://{self.socket}"

    @property
    def log_path(self) -> Path:
        return self.root / "dockerd.log"

    @property
    def exec_root(self) -> Path:
        return self.root / "exec"

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def docker(self, *args: str, check: bool = True, timeout: float = 120,
               stdin: bytes | None = None) -> str:
        """``docker -H <this engine> ARGS``'s stripped stdout."""
        res = subprocess.run([binary("docker", "docker.io"), "-H", self.host, *args],
                             check=False, capture_output=True, input=stdin, timeout=timeout)
        if check and res.returncode != 0:
            raise RuntimeError(f"docker {' '.join(args)} failed: {res.stderr.decode().strip()}")
        return res.stdout.decode().strip()

    def answers(self) -> bool:
        return subprocess.run([binary("docker", "docker.io"), "-H", self.host, "version"],
                              check=False, capture_output=True, timeout=30).returncode == 0

    def _make_bridge(self) -> None:
        ip = binary("ip", "iproute2")
        subprocess.run([ip, "link", "del", self.bridge], check=False, capture_output=True)
        for args in (["link", "add", self.bridge, "type", "bridge"],
                     ["addr", "add", self.subnet, "dev", self.bridge],
                     ["link", "set", self.bridge, "up"]):
            res = subprocess.run([ip, *args], check=False, capture_output=True, text=True)
            if res.returncode != 0:
                pytest.fail(f"ip {' '.join(args)} failed: {res.stderr.strip()}")

    def start(self, timeout: float = 60) -> None:
        exe = binary("dockerd", "docker.io")
        self.root.mkdir(parents=True, exist_ok=True)
        if not (Path("/sys/class/net") / self.bridge).exists():
            self._make_bridge()
        command = [exe, "--data-root", str(self.root / "data"),
                   "--exec-root", str(self.exec_root), "--pidfile", str(self.root / "docker.pid"),
                   "-H", self.host, f"--bridge={self.bridge}", "--iptables=false",
                   "--ip6tables=false", "--ip-masq=false", "--live-restore=false"]
        with self.log_path.open("ab") as log:
            self.proc = subprocess.Popen(command, stdin=subprocess.DEVNULL, stdout=log,
                                         stderr=log, start_new_session=True)
        try:
            wait_until(self.answers, what=f"private dockerd on {self.socket}", timeout=timeout,
                       proc=self.proc, log=lambda: tail(self.log_path, 3000), interval=0.2)
        except BaseException:
            self.stop()
            raise

    def stop(self, grace: float = 60) -> None:
        """SIGTERM by PID (the engine stops its containers, live-restore being off), SIGKILL
        after ``grace`` seconds; returns once it is reaped."""
        if self.proc is None:
            return
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(grace)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.proc = None

    def load(self, *images: str) -> None:
        """Copy ``images`` from the machine's engine into this one (docker save | docker load)."""
        for image in images:
            saved = subprocess.run([binary("docker", "docker.io"), "save", image], check=True,
                                   capture_output=True, timeout=300).stdout
            self.docker("load", stdin=saved, timeout=300)

    def leftovers(self) -> list[str]:
        """What the engine left running or mounted: shim processes and mounts under its roots."""
        pids = [f"pid {p} ({self._describe(_cmdline(p))})"
                for p in _pids_mentioning(str(self.exec_root))]
        return pids + [f"mount {m}" for m in mounts_under(self.root)]

    def _describe(self, cmdline: str) -> str:
        """A process of the engine; for a shim, its container's name and state on disk."""
        if " -id " not in cmdline:
            return cmdline[:160]
        cid = cmdline.split(" -id ", 1)[1].split()[0]
        try:
            config = json.loads((self.root / "data/containers" / cid / "config.v2.json")
                                .read_text())
            state = config.get("State", {})
            return (f"shim of {config.get('Name')} {cid[:12]} running={state.get('Running')} "
                    f"started={state.get('StartedAt')} finished={state.get('FinishedAt')}")
        except (OSError, ValueError):
            return f"shim of {cid[:12]}, unknown to the engine"

    def destroy(self, keep_log: bool = False) -> list[str]:
        """Stop the engine, then remove whatever it left; returns what had to be cleaned by
        force (empty when the engine went away cleanly). ``keep_log``: the log file stays (the
        caller removes the root)."""
        self.stop()
        deadline = time.monotonic() + 15  # its containerd may take a moment after dockerd
        while self.leftovers() and time.monotonic() < deadline:
            time.sleep(0.2)
        forced = self.leftovers()
        for pid in _pids_mentioning(str(self.exec_root)):
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        deadline = time.monotonic() + 10
        while _pids_mentioning(str(self.exec_root)) and time.monotonic() < deadline:
            time.sleep(0.1)
        for point in mounts_under(self.root):
            subprocess.run(["umount", "-l", point], check=False, capture_output=True)
        subprocess.run([binary("ip", "iproute2"), "link", "del", self.bridge], check=False,
                       capture_output=True)
        for child in self.root.iterdir() if self.root.exists() else []:
            if not (keep_log and child == self.log_path):
                if child.is_dir() and not child.is_symlink():
                    shutil.rmtree(child, ignore_errors=True)
                else:
                    child.unlink()
        if not keep_log:
            shutil.rmtree(self.root, ignore_errors=True)
        return forced
