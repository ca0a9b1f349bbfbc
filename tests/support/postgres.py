"""A PostgreSQL 15 server of the test's own (Debian's ``postgresql-15``): its data directory
under a tmp dir, a free loopback port, trust authentication for ``postgres`` on loopback
only, stopped by PID.

PostgreSQL refuses to run as root, so ``initdb`` and ``postgres`` run as the ``postgres``
system user (created by the Debian package), which then owns the data directory.
"""

from __future__ import annotations

import pwd
import shutil
import socket
import subprocess
from pathlib import Path

import pytest

from support.procs import LOOPBACK, ServerProcess, tail, wait_until

PG_BIN = Path("/usr/lib/postgresql/15/bin")
PG_USER = "postgres"


def _pg_user() -> pwd.struct_passwd:
    try:
        return pwd.getpwnam(PG_USER)
    except KeyError:
        pytest.fail(f"no {PG_USER!r} user: apt-get install -y postgresql-15")


class PostgresServer(ServerProcess):
    """``postgres -D workdir/data`` on ``127.0.0.1:port``; the database ``dbname`` exists once
    :meth:`start` returns. ``fsync=off``: the data is thrown away after the test."""

    name = "postgres"
    package = "postgresql-15"
    start_timeout = 30.0
    stop_grace = 10.0  # SIGTERM: a "smart" shutdown

    def __init__(self, workdir: Path, dbname: str = "backend") -> None:
        super().__init__(workdir)
        self.dbname = dbname

    @property
    def data_dir(self) -> Path:
        return self.workdir / "data"

    def command(self, exe: str) -> list[str]:
        return [exe, "-D", str(self.data_dir), "-h", LOOPBACK, "-p", str(self.port),
                "-k", str(self.workdir), "-c", "fsync=off", "-c", "full_page_writes=off",
                "-c", "max_connections=200"]

    def start(self) -> None:
        exe = PG_BIN / "postgres"
        if not exe.is_file():
            pytest.fail(f"{exe} is missing (apt-get install -y {self.package})")
        user = _pg_user()
        self.workdir.mkdir(parents=True, exist_ok=True)
        shutil.chown(self.workdir, user.pw_uid, user.pw_gid)
        if not self.data_dir.exists():
            init = subprocess.run(
                [str(PG_BIN / "initdb"), "-D", str(self.data_dir), "-U", PG_USER,
                 "--auth=trust", "-E", "UTF8", "--locale=C.UTF-8"],
                user=user.pw_uid, group=user.pw_gid, capture_output=True, text=True,
                check=False, cwd=self.workdir)
            if init.returncode != 0:
                pytest.fail(f"initdb failed:\n{init.stdout}\n{init.stderr}")
        log = self.log_path.open("ab")
        try:
            self.proc = subprocess.Popen(self.command(str(exe)), stdin=subprocess.DEVNULL,
                                         stdout=log, stderr=log, user=user.pw_uid,
                                         group=user.pw_gid, cwd=self.workdir)
        finally:
            log.close()
        try:
            wait_until(self.ready, what=f"postgres on {LOOPBACK}:{self.port}",
                       timeout=self.start_timeout, proc=self.proc,
                       log=lambda: tail(self.log_path, 3000), interval=0.2)
            self._createdb()
        except BaseException:
            self.stop()
            raise

    def ready(self) -> bool:
        try:
            with socket.create_connection((LOOPBACK, self.port), timeout=0.2):
                pass
        except OSError:
            return False
        return self._psql("SELECT 1").returncode == 0

    def _psql(self, sql: str, db: str = "postgres") -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [str(PG_BIN / "psql"), "-h", LOOPBACK, "-p", str(self.port), "-U", PG_USER, "-d", db, "-At",
             "-v", "ON_ERROR_STOP=1", "-c", sql],
            capture_output=True, text=True, check=False)

    def _createdb(self) -> None:
        made = self._psql(f'CREATE DATABASE "{self.dbname}"')
        if made.returncode != 0 and "already exists" not in made.stderr:
            pytest.fail(f"CREATE DATABASE {self.dbname} failed: {made.stderr}")

    def query(self, sql: str) -> list[list[str]]:
        """Rows of ``sql`` in :attr:`dbname` (``|``-separated columns as text)."""
        done = self._psql(sql, self.dbname)
        if done.returncode != 0:
            pytest.fail(f"psql {sql!r} failed: {done.stderr}")
        return [line.split("|") for line in done.stdout.splitlines() if line]
