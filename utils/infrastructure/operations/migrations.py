"""Applying the files of ``sql/`` to a database.

``sql/versioned/`` holds table and data changes: each file is applied once,
in order, and a file changed after it was applied is reported, not re-run.
``sql/repeatable/`` holds every function, trigger, grant and the cleanup
job, one file per concern with only today's definitions: a file is applied
again whenever its text differs from the one last applied. Every applied file
is recorded (``versioned/<name>`` or ``repeatable/<name>`` and its checksum)
in ``public.conversation_storage_migrations``; records of the pre-release
layout's files (``001_conversation_threads.sql`` ...) stay there as history.
An advisory lock keeps two concurrent runs from applying the same file twice.

The pg_cron schedule is also applied again by any run that finds pg_cron
enabled and the cleanup job missing, since it schedules nothing until the
operator enables pg_cron, often after it first ran.
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..contract.errors import StorageConfigurationError, StorageError

if TYPE_CHECKING:
    import psycopg  # imported where used at run time: the postgres extra is optional

_LOCK_KEY = 0x636F6E76  # any constant shared by every run of this command

#: The two kinds of files, in the order they are applied.
VERSIONED = "versioned"
REPEATABLE = "repeatable"

_SCHEDULE_FILE = "repeatable/90_cleanup_schedule.sql"
_CLEANUP_JOB = "cleanup-expired-threads"

_TABLE_DDL = """
create table if not exists public.conversation_storage_migrations (
    filename   text primary key,
    checksum   text not null,
    applied_at timestamptz not null default now()
);
alter table public.conversation_storage_migrations enable row level security;
"""

_RECORD = """
insert into public.conversation_storage_migrations (filename, checksum) values (%s, %s)
on conflict (filename) do update set checksum = excluded.checksum, applied_at = now()
"""


class MigrationError(StorageError):
    """An applied file has changed, or a file failed to apply."""


@dataclass(frozen=True)
class SqlFile:
    path: Path

    @property
    def kind(self) -> str:
        """``versioned`` or ``repeatable``: the folder it is in."""
        return self.path.parent.name

    @property
    def name(self) -> str:
        """The name it is recorded under, e.g. ``versioned/001_tables.sql``."""
        return f"{self.kind}/{self.path.name}"

    @property
    def text(self) -> str:
        return self.path.read_text(encoding="utf-8")

    @property
    def checksum(self) -> str:
        return hashlib.sha256(self.path.read_bytes()).hexdigest()


def default_sql_dir() -> Path:
    """``$CONVERSATION_SQL_DIR``, else the schema shipped inside this package.

    In the repository the package's ``sql`` is a link to the top-level
    ``sql/``; a daemon that copied the folder without it falls back to the
    ``sql/`` two levels up, where a checkout has it.
    """
    configured = os.environ.get("CONVERSATION_SQL_DIR")
    if configured:
        return Path(configured)
    shipped = Path(__file__).resolve().parents[1] / "sql"
    return shipped if shipped.is_dir() else Path(__file__).resolve().parents[3] / "sql"


def sql_files(directory: Path | None = None) -> list[SqlFile]:
    """Every file in apply order: ``versioned/`` by name, then ``repeatable/`` by name."""
    directory = directory or default_sql_dir()
    files = [SqlFile(path) for kind in (VERSIONED, REPEATABLE)
             for path in sorted((directory / kind).glob("*.sql"))]
    if not any(f.kind == VERSIONED for f in files):
        raise StorageConfigurationError(
            f"no .sql files in {directory / VERSIONED}: point CONVERSATION_SQL_DIR (or --sql-dir) at the "
            "project's sql/ folder"
        )
    return files


def migrate(dsn: str, *, directory: Path | None = None, dry_run: bool = False) -> list[str]:
    """Apply the pending files; return their names (what would run, with ``dry_run``)."""
    import psycopg

    files = sql_files(directory)
    try:
        with psycopg.connect(dsn, autocommit=True, connect_timeout=10) as conn:
            conn.execute("select pg_advisory_lock(%s)", (_LOCK_KEY,))
            try:
                return _apply_pending(conn, files, dry_run)
            finally:
                conn.execute("select pg_advisory_unlock(%s)", (_LOCK_KEY,))
    except psycopg.Error as exc:
        raise MigrationError(f"migration failed: {exc}") from exc


def fill_unknown_sizes(dsn: str, batch_size: int = 5000) -> int:
    """Store the size of threads written before schema version 6; return how many.

    Until then ``thread_stats`` measures such rows from their documents, which
    on a big table takes longer than Supabase's 8 s statement timeout. Each
    batch is its own short transaction.
    """
    import psycopg

    filled = 0
    try:
        with psycopg.connect(dsn, autocommit=True, connect_timeout=10) as conn:
            if _scalar(conn, "select to_regprocedure('public.thread_fill_sizes(integer)')") is None:
                return 0
            while batch := _scalar(conn, "select public.thread_fill_sizes(%s)", (batch_size,)):
                filled += batch
    except psycopg.Error as exc:
        raise MigrationError(f"filling in the sizes of older threads failed after {filled}: {exc}") from exc
    return filled


def _scalar(conn: psycopg.Connection, query: str, params: tuple | None = None) -> Any:
    row = conn.execute(query, params).fetchone()
    assert row is not None, "a select without from answers one row"
    return row[0]


def _apply_pending(conn, files: list[SqlFile], dry_run: bool) -> list[str]:
    exists = conn.execute("select to_regclass('public.conversation_storage_migrations')").fetchone()[0]
    applied: dict[str, str] = {}
    if exists:
        applied = dict(conn.execute("select filename, checksum from public.conversation_storage_migrations"))
    versioned = [f for f in files if f.kind == VERSIONED]
    changed = [f.name for f in versioned if f.name in applied and applied[f.name] != f.checksum]
    if changed:
        raise MigrationError(
            f"already applied but changed since: {', '.join(changed)}. Applied files of sql/versioned must "
            "not be edited; put the change in a new file with a higher number."
        )
    due = [f for f in versioned if f.name not in applied] + [
        f for f in files
        if f.kind == REPEATABLE and (applied.get(f.name) != f.checksum
                                     or (f.name == _SCHEDULE_FILE and _cleanup_job_missing(conn)))
    ]
    if dry_run:
        return [f.name for f in due]
    if not exists:
        with conn.transaction():
            conn.execute(_TABLE_DDL)
    for sql_file in due:
        try:
            with conn.transaction():
                conn.execute(sql_file.text)
                conn.execute(_RECORD, (sql_file.name, sql_file.checksum))
        except Exception as exc:
            raise MigrationError(f"{sql_file.name} failed to apply (nothing of it was kept): {exc}") from exc
    return [f.name for f in due]


def _cleanup_job_missing(conn) -> bool:
    """Whether pg_cron is enabled and this role sees no cleanup job (pg_cron shows each role its own)."""
    import psycopg

    enabled = conn.execute("select exists (select 1 from pg_catalog.pg_extension where extname = 'pg_cron')")
    if not enabled.fetchone()[0]:
        return False
    try:
        with conn.transaction():
            found = conn.execute("select exists (select 1 from cron.job where jobname = %s)", (_CLEANUP_JOB,))
            return not found.fetchone()[0]
    except psycopg.errors.InsufficientPrivilege:
        return False  # the file could not schedule as this role either; doctor tells
