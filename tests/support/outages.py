"""Stores a test can take away and bring back: Postgres stopped for real, or Supabase's API failing."""

from __future__ import annotations

import os
import signal
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Self

from tests.support.postgres_server import PASSWORD, PostgresServer
from tests.support.waiting import DEADLINE_SECONDS
from utils.infrastructure.backends.postgres_storage import PostgresStorage
from utils.infrastructure.backends.supabase_storage import SupabaseStorage
from utils.infrastructure.remote.near_cache import NearCache


class PostgresStore:
    """A Postgres server of the test's own: down is ``pg_ctl stop -m immediate``."""

    name = "postgres"

    def __init__(self, server: PostgresServer) -> None:
        self.server = server

    def client(self):
        # With the near cache a daemon gets for a server elsewhere (this one is on loopback).
        return PostgresStorage(self.server.dsn_for("postgres", password=PASSWORD), connect_timeout=1,
                               statement_timeout=2, near_cache=NearCache())

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
        return SupabaseStorage(self.project.url, self.project.secret_key, timeout_seconds=0.5, near_cache=NearCache())

    def down(self) -> None:
        self.project.gateway.fault = "503"

    def up(self) -> None:
        self.project.gateway.fault = None

    def connect(self):
        return self.project.connect()


class HeldProbes:
    """A failover daemon whose recovery probe waits for the test: it finds the store back only once released.

    Without it, a test that lets another client act between the store coming
    back and the daemon's replay has only ``first_probe_after`` seconds for
    that, which a loaded machine can overrun. Install it while the daemon is
    healthy (before the store goes down), so that no probe runs unheld.
    """

    def __init__(self, daemon) -> None:
        self.client = daemon.primary
        #: The client's own health(), which does not wait (for the test's checks).
        self.health = self.client.health
        self._released = threading.Event()

    def _held_health(self):
        self._released.wait(DEADLINE_SECONDS)
        return self.health()

    def __enter__(self) -> Self:
        self.client.health = self._held_health  # what the daemon's probe calls
        return self

    def release(self) -> None:
        self._released.set()

    def __exit__(self, *exc_info: object) -> None:
        self.release()
        del self.client.health


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
