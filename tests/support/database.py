"""Preparing test databases: Supabase's roles and the project's sql/ files."""

from __future__ import annotations

from pathlib import Path

import psycopg

PROJECT_ROOT = Path(__file__).resolve().parents[2]
SQL_DIR = PROJECT_ROOT / "sql"
SUPABASE_ROLES_SQL = Path(__file__).with_name("supabase_roles.sql")
AUTHENTICATOR_PASSWORD = "authenticator-test-password"


def sql_files() -> list[Path]:
    return sorted(SQL_DIR.glob("*.sql"))


def apply_sql(conn: psycopg.Connection, files: list[Path] | None = None) -> None:
    """Run each file of sql/ in order, each in its own transaction."""
    for path in files or sql_files():
        with conn.transaction():
            conn.execute(path.read_text())


def prepare_supabase_database(conn: psycopg.Connection) -> None:
    """Give the connected database Supabase's roles and default privileges."""
    with conn.transaction():
        conn.execute(SUPABASE_ROLES_SQL.read_text())
