"""Stores a test can take away and bring back: Postgres stopped for real, or Supabase's API failing."""

from __future__ import annotations

from tests.support.postgres_server import PASSWORD, PostgresServer
from utils.infrastructure.postgres_storage import PostgresStorage
from utils.infrastructure.supabase_storage import SupabaseStorage


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
