"""A throwaway PostgreSQL server for tests and benchmarks.

Runs the distribution's own server binaries in a temporary directory on a
free loopback port. PostgreSQL refuses to run as root, so as root the server
is run as the ``postgres`` user (``runuser``), which owns its data directory.
"""

from __future__ import annotations

import glob
import os
import shutil
import socket
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Self

import psycopg

from . import reaper

SERVER_USER = "postgres"
#: Password of every login role the harness creates in throwaway servers.
PASSWORD = "postgres-test-password"


def find_bindir() -> Path:
    """Directory holding initdb/pg_ctl: $PG_BINDIR, else the newest /usr/lib/postgresql/*/bin."""
    candidates = [os.environ.get("PG_BINDIR", "")]
    candidates += sorted(glob.glob("/usr/lib/postgresql/*/bin"), key=_version_key, reverse=True)
    on_path = shutil.which("pg_ctl")
    if on_path:
        candidates.append(str(Path(on_path).parent))
    for candidate in candidates:
        if candidate and (Path(candidate) / "initdb").exists():
            return Path(candidate)
    raise RuntimeError(
        "no PostgreSQL server binaries found: install them (Debian: apt-get install "
        "postgresql-15) or set PG_BINDIR to the directory holding initdb and pg_ctl"
    )


def _version_key(path: str) -> int:
    try:
        return int(Path(path).parent.name)
    except ValueError:
        return 0


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class PostgresServer:
    """Start with :meth:`start`, stop with :meth:`stop` (or use as a context manager)."""

    def __init__(
        self, *, settings: dict[str, str] | None = None, durable: bool = False, superuser: str = "postgres"
    ) -> None:
        self.bindir = find_bindir()
        self.superuser = superuser
        self.port = free_port()
        self.as_root = os.geteuid() == 0
        self.settings = {
            "listen_addresses": "127.0.0.1",
            "max_connections": "100",
            "shared_buffers": "128MB",
            # Tests need crash-safe semantics of the database, not of the disk:
            # a commit is written to the WAL before it is acknowledged (so it
            # survives the server being killed, as the OS keeps the file), but
            # not flushed to the disk. Benchmarks pass durable=True for real fsyncs.
            "fsync": "on" if durable else "off",
            "synchronous_commit": "on",
            "full_page_writes": "on" if durable else "off",
            **(settings or {}),
        }
        self.root = Path(tempfile.mkdtemp(prefix="conversation-pg-"))
        self.datadir = self.root / "data"
        self.logfile = self.root / "server.log"
        self._started = False
        self._reaper_token: int | None = None

    @property
    def dsn(self) -> str:
        return self.dsn_for("postgres")

    def dsn_for(self, dbname: str, user: str | None = None, password: str | None = None) -> str:
        user = user or self.superuser
        auth = f"{user}:{password}" if password else user
        return f"postgresql://{auth}@127.0.0.1:{self.port}/{dbname}"

    def start(self) -> Self:
        if self.as_root:
            shutil.chown(self.root, SERVER_USER, SERVER_USER)
        self._run(
            "initdb", "-D", str(self.datadir), "-U", self.superuser, "-E", "UTF8",
            "--locale=C", "--auth-local=trust", "--auth-host=scram-sha-256",
            "--pwfile", str(self._password_file()), "-N",
        )
        self.start_process()
        return self

    def stop(self, mode: str = "fast") -> None:
        if self._started:
            self._run("pg_ctl", "-D", str(self.datadir), "-m", mode, "-w", "stop", check=False)
            self._started = False
        reaper.unregister(self._reaper_token)
        self._reaper_token = None

    def start_process(self) -> None:
        """Start the server on the existing data directory (again, after :meth:`stop`)."""
        options = " ".join(f"-c {k}={v}" for k, v in self.settings.items())
        options += f" -p {self.port} -k {self.root}"
        # Registered before it starts: a SIGTERM during pg_ctl start must not leave it running.
        if self._reaper_token is None:
            self._reaper_token = reaper.register(self._stop_left_behind)
        self._run("pg_ctl", "-D", str(self.datadir), "-l", str(self.logfile), "-o", options, "-w", "-t", "60", "start")
        self._started = True
        self._wait_ready()

    @property
    def postmaster_pid(self) -> int:
        """The server's first process: every backend it starts later is a fork of it."""
        return int((self.datadir / "postmaster.pid").read_text().split("\n", 1)[0])

    def _stop_left_behind(self) -> None:
        # pg_ctl, not a signal to our child: pg_ctl start detached the server from this process.
        self._run("pg_ctl", "-D", str(self.datadir), "-m", "immediate", "-w", "stop", check=False)
        shutil.rmtree(self.root, ignore_errors=True)

    def cleanup(self) -> None:
        self.stop("immediate")
        shutil.rmtree(self.root, ignore_errors=True)

    def connect(self, dbname: str = "postgres", *, user: str | None = None, **kwargs) -> psycopg.Connection:
        return psycopg.connect(self.dsn_for(dbname, user=user, password=PASSWORD), autocommit=True, **kwargs)

    def create_database(self, name: str) -> str:
        with self.connect() as conn:
            conn.execute(f'create database "{name}"')
        return name

    def log_tail(self, lines: int = 40) -> str:
        try:
            return "\n".join(self.logfile.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.cleanup()

    def _password_file(self) -> Path:
        path = self.root / "pwfile"
        path.write_text(PASSWORD + "\n")
        if self.as_root:
            shutil.chown(path, SERVER_USER, SERVER_USER)
        return path

    def _run(self, tool: str, *args: str, check: bool = True) -> subprocess.CompletedProcess:
        command = [str(self.bindir / tool), *args]
        if self.as_root:
            command = ["runuser", "-u", SERVER_USER, "--", *command]
        result = subprocess.run(command, capture_output=True, text=True, cwd=self.root, check=False)
        if check and result.returncode != 0:
            raise RuntimeError(
                f"{tool} failed ({result.returncode}): {result.stderr.strip()}\n{self.log_tail()}"
            )
        return result

    def _wait_ready(self, timeout: float = 30.0) -> None:
        deadline = time.monotonic() + timeout
        while True:
            try:
                with self.connect():
                    return
            except psycopg.OperationalError:
                if time.monotonic() > deadline:
                    raise RuntimeError(f"PostgreSQL did not accept connections:\n{self.log_tail()}")
                time.sleep(0.1)

