"""The hourly cleanup job on a real pg_cron (Debian's postgresql-NN-cron).

The server preloads pg_cron as Supabase's does, so the extension is available
in database ``postgres``; the schema never enables it: the operator does.
"""

from __future__ import annotations

import subprocess
import sys
from types import SimpleNamespace

import psycopg
import pytest

from tests.support.database import PG_CRON_SETTINGS, PROJECT_ROOT, SQL_DIR, apply_sql
from tests.support.environment import clean_environ
from tests.support.postgres_server import PASSWORD, PostgresServer
from utils.infrastructure.operations.migrations import migrate

JOB = "cleanup-expired-threads"
SCHEDULE_FILE = "repeatable/90_cleanup_schedule.sql"


@pytest.fixture(scope="module")
def cron_server():
    server = PostgresServer(settings=PG_CRON_SETTINGS)
    try:
        server.start()
    except RuntimeError as exc:
        raise RuntimeError(
            f"PostgreSQL with pg_cron did not start; install the pg_cron package matching the server "
            f"(Debian: postgresql-{server.bindir.parent.name}-cron):\n{exc}"
        ) from None
    yield server
    server.cleanup()


def _doctor(dsn: str, spool_dir) -> subprocess.CompletedProcess:
    env = {**clean_environ(), "CONVERSATION_STORAGE_BACKEND": "postgres", "DATABASE_URL": dsn,
           "CONVERSATION_SPOOL_PATH": str(spool_dir / "spool.sqlite3")}
    return subprocess.run([sys.executable, "-m", "utils.infrastructure.operations.cli", "doctor"], cwd=PROJECT_ROOT,
                          env=env, capture_output=True, text=True, timeout=120, check=False)


def _cron_enabled(conn) -> bool:
    return conn.execute("select exists (select 1 from pg_extension where extname = 'pg_cron')").fetchone()[0]


@pytest.fixture(scope="module")
def before_enabling(cron_server, tmp_path_factory):
    """Database ``postgres`` migrated while pg_cron is available there but not enabled (a fresh Supabase project)."""
    dsn = cron_server.dsn_for("postgres", password=PASSWORD)
    migrated = migrate(dsn)
    notices: list[str] = []
    with cron_server.connect() as conn:
        conn.add_notice_handler(lambda diag: notices.append(diag.message_primary))
        apply_sql(conn, [SQL_DIR / SCHEDULE_FILE])  # pasted into an SQL editor
        enabled = _cron_enabled(conn)
        report = conn.execute("select public.storage_health()").fetchone()[0]
    return SimpleNamespace(migrated=migrated, notices=notices, enabled=enabled, report=report,
                           doctor=_doctor(dsn, tmp_path_factory.mktemp("doctor-before")))


@pytest.fixture(scope="module")
def after_enabling(cron_server, before_enabling, tmp_path_factory):
    """The operator enables pg_cron, then runs migrate again (twice)."""
    dsn = cron_server.dsn_for("postgres", password=PASSWORD)
    with cron_server.connect() as conn:
        conn.execute("create extension pg_cron")
    return SimpleNamespace(migrated=[migrate(dsn), migrate(dsn)],
                           doctor=_doctor(dsn, tmp_path_factory.mktemp("doctor-after")))


@pytest.fixture(scope="module")
def cron_db(cron_server, after_enabling):
    with cron_server.connect() as conn:
        yield conn


def test_available_but_not_enabled_pg_cron_stays_off_and_nothing_is_scheduled(before_enabling):
    assert SCHEDULE_FILE in before_enabling.migrated
    assert before_enabling.enabled is False
    assert (before_enabling.report["pg_cron_installed"], before_enabling.report["cleanup_job_scheduled"]) == (
        False, None)
    [notice] = before_enabling.notices
    assert notice.startswith("pg_cron is not enabled in this database: no cleanup job scheduled, nothing changed")
    assert "Dashboard > Database > Extensions > pg_cron" in notice
    assert "conversation-storage migrate again" in notice
    assert "conversation-storage cleanup hourly from system cron" in notice


def test_doctor_says_how_to_enable_pg_cron_and_what_to_run_then(before_enabling):
    result = before_enabling.doctor
    assert result.returncode == 0, result.stdout + result.stderr
    lines = result.stdout.splitlines()
    at = lines.index("WARN  hourly cleanup: pg_cron is not enabled in this database: no job deletes expired threads")
    fix = lines[at + 1]
    assert fix.startswith("      fix: enable pg_cron (Supabase: Dashboard > Database > Extensions > pg_cron, ")
    assert "`create extension pg_cron`" in fix
    assert "then run `conversation-storage migrate` again or apply sql/repeatable/90_cleanup_schedule.sql again" in fix
    assert fix.endswith("or run `conversation-storage cleanup` hourly from system cron")


def test_migrate_schedules_the_jobs_once_pg_cron_is_enabled(after_enabling, cron_db):
    assert after_enabling.migrated == [[SCHEDULE_FILE], []]
    assert [name for name, *_ in _jobs(cron_db)] == [JOB, "purge-cron-job-run-details"]


def test_doctor_reports_the_scheduled_job(after_enabling):
    result = after_enabling.doctor
    assert result.returncode == 0, result.stdout + result.stderr
    assert "PASS  hourly cleanup: pg_cron job cleanup-expired-threads is scheduled" in result.stdout.splitlines()


def _jobs(conn):
    return conn.execute("select jobname, schedule, command from cron.job order by jobname").fetchall()


def test_the_job_is_scheduled_hourly(cron_db):
    jobs = {name: (schedule, command) for name, schedule, command in _jobs(cron_db)}
    assert jobs[JOB][0] == "0 * * * *"
    assert "public.cleanup_expired_threads(" in jobs[JOB][1]
    assert jobs["purge-cron-job-run-details"][0] == "30 3 * * *"


def test_applying_again_updates_instead_of_duplicating(cron_db):
    before = _jobs(cron_db)
    apply_sql(cron_db, [SQL_DIR / SCHEDULE_FILE])
    apply_sql(cron_db, [SQL_DIR / SCHEDULE_FILE])
    assert _jobs(cron_db) == before
    assert [name for name, *_ in before].count(JOB) == 1


def test_running_the_job_deletes_every_expired_row_and_no_live_row(cron_db):
    cron_db.execute("truncate public.conversation_threads")
    cron_db.execute(
        "insert into public.conversation_threads (thread_id, conversation_data, expires_at)"
        " select 'thread:expired-' || i, '{}', now() - interval '1 minute' from generate_series(1, 2500) i"
    )
    cron_db.execute(
        "insert into public.conversation_threads (thread_id, conversation_data, expires_at)"
        " select 'thread:live-' || i, '{}', now() + interval '1 hour' from generate_series(1, 10) i"
    )
    command = cron_db.execute("select command from cron.job where jobname = %s", (JOB,)).fetchone()[0]
    cron_db.execute(command)  # as pg_cron runs it: one top-level statement
    counts = cron_db.execute(
        "select count(*) filter (where expires_at <= now()), count(*) filter (where expires_at > now())"
        " from public.conversation_threads"
    ).fetchone()
    assert counts == (0, 10)


def test_health_reports_the_job(cron_db):
    report = cron_db.execute("select public.storage_health()").fetchone()[0]
    assert report["cleanup_job_scheduled"] is True


def test_without_pg_cron_the_file_only_gives_notice(postgres_server):
    name = postgres_server.create_database("no_cron")
    notices: list[str] = []
    with postgres_server.connect(name) as conn:
        conn.add_notice_handler(lambda diag: notices.append(diag.message_primary))
        apply_sql(conn)
        has_cron = conn.execute("select count(*) from pg_extension where extname = 'pg_cron'").fetchone()[0]
        report = conn.execute("select public.storage_health()").fetchone()[0]
    assert has_cron == 0
    [notice] = [n for n in notices if n.startswith("pg_cron is not")]
    assert "no cleanup job scheduled, nothing changed" in notice
    assert "conversation-storage cleanup hourly from system cron" in notice
    assert report["cleanup_job_scheduled"] is None


def test_the_job_command_is_valid_sql_outside_pg_cron(cron_db):
    # Guards against quoting mistakes in the nested dollar quotes.
    command = cron_db.execute("select command from cron.job where jobname = %s", (JOB,)).fetchone()[0]
    assert command.strip().startswith("do $cleanup$")
    with pytest.raises(psycopg.errors.InvalidTransactionTermination), cron_db.transaction():
        cron_db.execute(command)  # COMMIT between batches needs a top-level statement
