"""Stores a test can take away and bring back: Postgres stopped for real, or Supabase's API failing."""

from __future__ import annotations

import os
import signal
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from tests.support.postgres_server import PASSWORD, PostgresServer
from utils.infrastructure.backends.postgres_storage import PostgresStorage
from utils.infrastructure.backends.supabase_storage import SupabaseStorage


class PostgresStore:
    """A Postgres server of the test's own: down is ``pg_ctl stop -m immediate``."""

    name = "postgres"

    def __init__(self, server: PostgresServer) -> None:
        self.server = server

    def client(self):
        return PostgresStorage(self.server.dsn_for("postgres", password=PASSWORD), connect_timeout=1,
                               statement_timeout=2)

    def down(self) -> None:
        self.server.stop("immediate")

    def up(self) -> None:
        if not self.server._started:
            self.server.start_process()

    def connect(self):
        return self.server.connect()


class SupabaseStore:
    """The Supabase stand-in: down is its API answering 503 (the session's database stays up)."""

    name = "supabase"

    def __init__(self, project) -> None:
        self.project = project

    def client(self):
        return SupabaseStorage(self.project.url, self.project.secret_key, timeout_seconds=0.5)

    def down(self) -> None:
        self.project.gateway.fault = "503"

    def up(self) -> None:
        self.project.gateway.fault = None

    def connect(self):
        return self.project.connect()


@contextmanager
def frozen(server: PostgresServer) -> Iterator[None]:
    """The whole server stopped with SIGSTOP (a hung host): sockets stay open, nothing answers."""
    postmaster = int((server.datadir / "postmaster.pid").read_text().split()[0])
    processes = [postmaster, *_children(postmaster)]
    for pid in processes:
        os.kill(pid, signal.SIGSTOP)
    try:
        yield
    finally:
        for pid in processes:
            try:
                os.kill(pid, signal.SIGCONT)
            except ProcessLookupError:
                pass


def _children(parent: int) -> list[int]:
    found = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue  # gone meanwhile
        if int(fields[1]) == parent:
            found.append(int(stat.parent.name))
    return found
