"""A throwaway PostgreSQL server for the tests: initdb + pg_ctl into a temporary folder, on a free port.

PostgreSQL refuses to run as root, so as root (CI and these machines) the server runs as the `postgres`
user; its folder lives outside pytest's root-only temp tree. Each test gets its own database.
"""

from __future__ import annotations

import itertools
import os
import pwd
import shutil
import socket
import subprocess
import tempfile
import time
from pathlib import Path

USER = "fleet"


def _server_path() -> None:
    """Debian keeps the server binaries in /usr/lib/postgresql/<version>/bin, off PATH: use the newest."""
    if shutil.which("initdb"):
        return
    found = sorted(Path("/usr/lib/postgresql").glob("*/bin/initdb"), key=lambda p: int(p.parent.parent.name)
                   if p.parent.parent.name.isdigit() else 0)
    if found:
        os.environ["PATH"] = f"{found[-1].parent}{os.pathsep}{os.environ.get('PATH', '')}"


def binaries_present() -> bool:
    _server_path()
    return all(shutil.which(b) for b in ("initdb", "pg_ctl", "postgres"))


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Postgres:
    def __init__(self) -> None:
        self.root = Path(tempfile.mkdtemp(prefix="fleet-pg-"))
        self.data = self.root / "data"
        self.port = _free_port()
        self.log = self.root / "postgres.log"
        self._names = itertools.count(1)
        self.as_postgres = os.geteuid() == 0

    def _run(self, *argv: str) -> None:
        cmd = ["runuser", "-u", "postgres", "--", *argv] if self.as_postgres else list(argv)
        out = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
        if out.returncode != 0:
            raise RuntimeError(f"{' '.join(argv)} failed:\n{out.stdout}\n{out.stderr}\n{self._tail()}")

    def _tail(self) -> str:
        try:
            return self.log.read_text()[-3000:]
        except OSError:
            return ""

    def start(self) -> Postgres:
        os.chmod(self.root, 0o755)
        self.data.mkdir(mode=0o700)
        self.log.touch()
        if self.as_postgres:
            pw = pwd.getpwnam("postgres")
            for p in (self.data, self.log):
                os.chown(p, pw.pw_uid, pw.pw_gid)
        self._run("initdb", "-D", str(self.data), "-A", "trust", "-U", USER, "--no-sync", "-E", "UTF8")
        # fsync off: a test server that dies takes its data with it anyway; the tests are about behaviour
        self._run("pg_ctl", "-D", str(self.data), "-l", str(self.log), "-w", "-t", "120", "-o",
                  f"-k {self.data} -p {self.port} -h 127.0.0.1 -c fsync=off -c max_connections=300", "start")
        self.wait()
        return self

    def wait(self, timeout: float = 60) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=1).close()
                return
            except OSError:
                time.sleep(0.1)
        raise RuntimeError(f"PostgreSQL did not listen on {self.port}:\n{self._tail()}")

    def url(self, database: str = "postgres") -> str:
        return f"postgresql+psycopg://{USER}@127.0.0.1:{self.port}/{database}"

    def new_database(self) -> str:
        """A fresh, empty database; returns its SQLAlchemy URL."""
        import psycopg

        name = f"fleet_{next(self._names)}"
        with psycopg.connect(f"host=127.0.0.1 port={self.port} user={USER} dbname=postgres",
                             autocommit=True) as conn:
            conn.execute(f"CREATE DATABASE {name}")
        return self.url(name)

    def stop(self) -> None:
        try:
            self._run("pg_ctl", "-D", str(self.data), "-m", "immediate", "-w", "stop")
        finally:
            shutil.rmtree(self.root, ignore_errors=True)
