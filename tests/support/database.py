"""Preparing test databases: Supabase's own setup and the project's sql/ files."""

from __future__ import annotations

from pathlib import Path

import psycopg
from psycopg import sql

from .history import PRE_RELEASE_LAYOUT, sql_files_at
from .postgres_server import PASSWORD

PROJECT_ROOT = Path(__file__).resolve().parents[2]
SQL_DIR = PROJECT_ROOT / "sql"
SUPABASE_INIT_SQL = Path(__file__).with_name("supabase_init.sql")
AUTHENTICATOR_PASSWORD = "authenticator-test-password"

#: Server settings of a cluster that preloads pg_cron for database ``postgres``, as Supabase's does.
PG_CRON_SETTINGS = {
    "shared_preload_libraries": "pg_cron",
    "cron.database_name": "postgres",
    # Jobs run inside the server, so they need no login of their own.
    "cron.use_background_workers": "on",
    "max_worker_processes": "20",
    # Jobs are scheduled as on Supabase but never launched: a test running
    # across the top of the hour must not see expired rows vanish under it.
    # The tests run the job's command themselves (tests/test_pg_cron.py).
    "cron.max_running_jobs": "0",
}


def sql_files() -> list[Path]:
    """The files of sql/ in apply order: versioned/, then repeatable/."""
    return sorted((SQL_DIR / "versioned").glob("*.sql")) + sorted((SQL_DIR / "repeatable").glob("*.sql"))


def legacy_sql_files(before: str | None = None) -> list[Path]:
    """The pre-release files in order; with ``before``, those whose name sorts below it (e.g. "011")."""
    return [path for path in sql_files_at(PRE_RELEASE_LAYOUT) if before is None or path.name < before]


def apply_sql(conn: psycopg.Connection, files: list[Path] | None = None) -> None:
    """Run each file of sql/ in order, each in its own transaction."""
    for path in files or sql_files():
        with conn.transaction():
            conn.execute(path.read_text())


def prepare_supabase_database(conn: psycopg.Connection) -> None:
    """Set up database ``postgres`` as Supabase does (see supabase_init.sql).

    ``conn`` is the superuser ``supabase_admin`` of a cluster started with
    :data:`PG_CRON_SETTINGS`. Afterwards ``postgres`` (password
    :data:`PASSWORD`) is the project owner without superuser rights, and
    ``authenticator`` (password :data:`AUTHENTICATOR_PASSWORD`) is the login
    the API uses.
    """
    script = sql.SQL(SUPABASE_INIT_SQL.read_text()).format(
        postgres_password=sql.Literal(PASSWORD),
        authenticator_password=sql.Literal(AUTHENTICATOR_PASSWORD),
    )
    with conn.transaction():
        conn.execute(script)
