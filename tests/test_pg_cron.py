"""The hourly cleanup job on a real pg_cron (Debian's postgresql-NN-cron)."""

from __future__ import annotations

import psycopg
import pytest

from tests.support.database import PG_CRON_SETTINGS, apply_sql, sql_files
from tests.support.postgres_server import PostgresServer

JOB = "cleanup-expired-threads"


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


@pytest.fixture(scope="module")
def cron_db(cron_server):
    with cron_server.connect() as conn:
        apply_sql(conn)
        yield conn


def _jobs(conn):
    return conn.execute("select jobname, schedule, command from cron.job order by jobname").fetchall()


def test_the_job_is_scheduled_hourly(cron_db):
    jobs = {name: (schedule, command) for name, schedule, command in _jobs(cron_db)}
    assert jobs[JOB][0] == "0 * * * *"
    assert "public.cleanup_expired_threads(" in jobs[JOB][1]
    assert jobs["purge-cron-job-run-details"][0] == "30 3 * * *"


def test_applying_again_updates_instead_of_duplicating(cron_db):
    before = _jobs(cron_db)
    apply_sql(cron_db, [f for f in sql_files() if f.name.startswith("005")])
    apply_sql(cron_db, [f for f in sql_files() if f.name.startswith("005")])
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
    assert any("cleanup_expired_threads.py" in n for n in notices), notices
    assert report["cleanup_job_scheduled"] is None


def test_the_job_command_is_valid_sql_outside_pg_cron(cron_db):
    # Guards against quoting mistakes in the nested dollar quotes.
    command = cron_db.execute("select command from cron.job where jobname = %s", (JOB,)).fetchone()[0]
    assert command.strip().startswith("do $cleanup$")
    with pytest.raises(psycopg.errors.InvalidTransactionTermination):
        with cron_db.transaction():
            cron_db.execute(command)  # COMMIT between batches needs a top-level statement
