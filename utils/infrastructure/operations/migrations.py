"""Applying the files of ``sql/`` to a database, each once, in order.

Every applied file is recorded (name and checksum) in
``public.conversation_storage_migrations``, so a second run does nothing and
a new file is applied exactly once. A file changed after it was applied is
reported, not silently re-run. An advisory lock keeps two concurrent runs
from applying the same file twice.

The pg_cron schedule (sql/005) is the one file applied again: by any run that
finds pg_cron enabled and the cleanup job missing, since the file schedules
nothing until the operator enables pg_cron, often after it first ran.
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

#: Files edited after release: {file: {checksum of an earlier text: checksum
#: of the text it counts as}}, so databases that ran the earlier text keep
#: migrating. Only for edits that leave such databases as the new text
#: would; anything else goes into a new file. A further edit of such a file
#: is refused like any other until it gets an entry here. Say why with each.
_EARLIER_CHECKSUMS: dict[str, dict[str, str]] = {
    # 005 used to enable pg_cron itself where the role could (Supabase lets
    # postgres); now it only schedules where the operator enabled pg_cron.
    # Where the old text ran, the jobs it scheduled are the ones the new
    # text schedules, and the extension it enabled stays: by now the
    # operator may rely on it.
    "005_cleanup_schedule.sql": {
        "aa79d0a5ae2e56ddaa407b6146a8a207e8f4be894377c0f6eb931f007e388cb4":
            "cddcad30952a9bf85c0acef8837da4d92ac1bbd7a769322ffe55a16dd1c2e90c",
    },
}

_SCHEDULE_FILE = "005_cleanup_schedule.sql"
_CLEANUP_JOB = "cleanup-expired-threads"

_TABLE_DDL = """
create table if not exists public.conversation_storage_migrations (
    filename   text primary key,
    checksum   text not null,
    applied_at timestamptz not null default now()
);
alter table public.conversation_storage_migrations enable row level security;
"""


class MigrationError(StorageError):
    """An applied file has changed, or a file failed to apply."""


@dataclass(frozen=True)
class SqlFile:
    path: Path

    @property
    def name(self) -> str:
        return self.path.name

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
    directory = directory or default_sql_dir()
    files = sorted(directory.glob("*.sql"))
    if not files:
        raise StorageConfigurationError(
            f"no .sql files in {directory}: point CONVERSATION_SQL_DIR (or --sql-dir) at the project's sql/ folder"
        )
    return [SqlFile(path) for path in files]


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
    changed = [f.name for f in files if f.name in applied and not _same_migration(f, applied[f.name])]
    if changed:
        raise MigrationError(
            f"already applied but changed since: {', '.join(changed)}. Applied files must not be "
            "edited; put the change in a new file with a higher number."
        )
    pending = [f for f in files if f.name not in applied]
    schedule = next((f for f in files if f.name == _SCHEDULE_FILE and f.name in applied), None)
    if schedule is not None and not _cleanup_job_missing(conn):
        schedule = None
    if dry_run:
        return [f.name for f in pending] + ([schedule.name] if schedule else [])
    if not exists:
        with conn.transaction():
            conn.execute(_TABLE_DDL)
    for sql_file in pending:
        try:
            with conn.transaction():
                conn.execute(sql_file.text)
                conn.execute(
                    "insert into public.conversation_storage_migrations (filename, checksum) values (%s, %s)",
                    (sql_file.name, sql_file.checksum),
                )
        except Exception as exc:
            raise MigrationError(f"{sql_file.name} failed to apply (nothing of it was kept): {exc}") from exc
    if schedule is not None:
        try:
            with conn.transaction():
                conn.execute(schedule.text)
        except Exception as exc:
            raise MigrationError(f"{schedule.name} failed to schedule the cleanup job: {exc}") from exc
        return [f.name for f in pending] + [schedule.name]
    return [f.name for f in pending]


def _same_migration(sql_file: SqlFile, recorded: str) -> bool:
    return sql_file.checksum in (recorded, _EARLIER_CHECKSUMS.get(sql_file.name, {}).get(recorded))


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
