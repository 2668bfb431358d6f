"""A real PgBouncer in transaction mode in front of a test Postgres (Debian package ``pgbouncer``).

Configured as poolers are in front of Supabase: transaction pooling, and the
``options`` startup parameter ignored, so a client's ``statement_timeout``
never reaches the server.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Self

import psycopg

from . import reaper
from .postgres_server import PASSWORD, PostgresServer, free_port


class PgBouncer:
    def __init__(self, server: PostgresServer, *, pool_mode: str = "transaction",
                 ignore_startup_parameters: str = "extra_float_digits, options") -> None:
        self.server = server
        self.port = free_port()
        self.root = Path(tempfile.mkdtemp(prefix="conversation-pgbouncer-"))
        os.chmod(self.root, 0o777)  # it drops root for the postgres user, who writes its pidfile here
        self.pool_mode = pool_mode
        self.ignore_startup_parameters = ignore_startup_parameters
        self.logfile = self.root / "pgbouncer.log"
        self._process: subprocess.Popen | None = None
        self._reaper_token: int | None = None

    def dsn_for(self, dbname: str = "postgres") -> str:
        return f"postgresql://postgres:{PASSWORD}@127.0.0.1:{self.port}/{dbname}"

    @property
    def pid(self) -> int:
        assert self._process is not None, "started"
        return self._process.pid

    def start(self) -> Self:
        binary = shutil.which("pgbouncer") or "/usr/sbin/pgbouncer"
        (self.root / "users.txt").write_text(f'"postgres" "{PASSWORD}"\n')
        (self.root / "pgbouncer.ini").write_text(
            "[databases]\n"
            f"* = host=127.0.0.1 port={self.server.port}\n"
            "[pgbouncer]\n"
            f"listen_addr = 127.0.0.1\nlisten_port = {self.port}\nunix_socket_dir =\n"
            f"auth_type = plain\nauth_file = {self.root / 'users.txt'}\n"
            f"pool_mode = {self.pool_mode}\n"
            f"ignore_startup_parameters = {self.ignore_startup_parameters}\n"
            f"pidfile = {self.root / 'pgbouncer.pid'}\n"
            "default_pool_size = 20\nmax_client_conn = 200\n"
        )
        for path in self.root.iterdir():
            os.chmod(path, 0o644)
        user = ["-u", "postgres"] if os.geteuid() == 0 else []
        # Its log goes to stderr, into a file: a pipe nobody reads fills after
        # about 230 connections (64 KiB of log lines), and then pgbouncer,
        # blocked writing to it, accepts and answers nothing more.
        with open(self.logfile, "ab") as log:
            self._process = subprocess.Popen([binary, *user, str(self.root / "pgbouncer.ini")],
                                             stdout=subprocess.DEVNULL, stderr=log)
        # A child outlives a parent killed by a signal: stop it at exit and on SIGTERM too.
        self._reaper_token = reaper.register_process(self._process)
        deadline = time.monotonic() + 15
        while True:
            try:
                with psycopg.connect(self.dsn_for(), connect_timeout=2, autocommit=True) as conn:
                    conn.execute("select 1")
                return self
            except psycopg.OperationalError:
                if self._process.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(f"pgbouncer did not start: {self.log_tail()}") from None
                time.sleep(0.1)

    def log_tail(self) -> str:
        try:
            return self.logfile.read_text()[-2000:]
        except OSError:
            return ""

    def stop(self) -> None:
        if self._process is not None and self._process.poll() is None:
            self._process.terminate()
            try:
                self._process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self._process.kill()
                self._process.wait()
        reaper.unregister(self._reaper_token)
        self._reaper_token = None
        shutil.rmtree(self.root, ignore_errors=True)

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()
