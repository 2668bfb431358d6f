"""What is specific to the direct Postgres backend: pooling, concurrency, pooler mode, errors."""

from __future__ import annotations

import threading
import time

import psycopg
import pytest

from tests.support.database import apply_sql, legacy_sql_files
from tests.support.postgres_server import PASSWORD, PostgresServer, free_port
from tests.support.waiting import wait_until, wait_until_answered
from utils.infrastructure.backends.postgres_storage import (
    APPLICATION_NAME,
    PostgresStorage,
    uses_transaction_pooler,
)
from utils.infrastructure.contract.errors import (
    StoragePermissionError,
    StorageSchemaError,
    StorageUnavailableError,
)
from utils.infrastructure.remote.schema import REQUIRED_SCHEMA_VERSION


def test_eight_threads_run_their_queries_at_the_same_time(postgres_server, postgres_dsn):
    """With the table locked, every thread's query must be waiting in the server at once:
    a lock around queries in the client would let only one through."""
    dbname = psycopg.conninfo.conninfo_to_dict(postgres_dsn)["dbname"]
    with PostgresStorage(postgres_dsn, min_size=8, max_size=8) as storage:
        storage.setex("thread:shared", 60, "{}")
        with postgres_server.connect(dbname) as locker, postgres_server.connect(dbname) as monitor:
            locker.execute("begin")
            locker.execute("lock table public.conversation_threads in access exclusive mode")
            results: list[object] = []
            threads = [threading.Thread(target=lambda: results.append(storage.get("thread:shared"))) for _ in range(8)]
            for t in threads:
                t.start()
            try:
                # A separate autocommit connection: pg_stat_activity is a
                # snapshot frozen for the rest of a transaction.
                wait_until(lambda: monitor.execute(
                    "select count(*) from pg_stat_activity where application_name = %s"
                    " and wait_event_type = 'Lock'",
                    (APPLICATION_NAME,),
                ).fetchone()[0] == 8, "all eight queries to wait on the table lock in the server at once")
            finally:
                locker.execute("rollback")
                for t in threads:
                    t.join()
    assert results == ["{}"] * 8


def _prepared_statement_count(storage: PostgresStorage) -> int:
    with storage._pool.connection() as conn:
        return conn.execute("select count(*) from pg_prepared_statements").fetchone()[0]


def test_transaction_pooler_mode_never_prepares_statements(postgres_dsn):
    with PostgresStorage(postgres_dsn, min_size=1, max_size=1, transaction_pooler=True) as storage:
        storage.setex("thread:p", 60, "{}")
        for _ in range(20):
            storage.get("thread:p")
        with storage._pool.connection() as conn:
            assert conn.prepare_threshold is None
        assert _prepared_statement_count(storage) == 0


def test_direct_mode_prepares_hot_statements(postgres_dsn):
    # The counterpart of the pooler test: without pooler mode the same calls
    # do get prepared, so the count above is a real observation.
    with PostgresStorage(postgres_dsn, min_size=1, max_size=1, transaction_pooler=False) as storage:
        storage.setex("thread:p", 60, "{}")
        for _ in range(20):
            storage.get("thread:p")
        assert _prepared_statement_count(storage) > 0


@pytest.mark.parametrize(
    ("dsn", "expected"),
    [
        ("postgresql://postgres:pw@db.example.supabase.com:6543/postgres", True),
        ("postgresql://postgres:pw@db.example.supabase.com:5432/postgres", False),
        ("host=aws-0-eu.pooler.supabase.com port=6543 dbname=postgres", True),
        ("postgresql://app:pw@pgbouncer.internal:6432/threads", True),  # PgBouncer's default port
        ("postgresql://localhost/postgres", False),
    ],
)
def test_transaction_pooler_is_recognised_by_its_port(dsn, expected):
    assert uses_transaction_pooler(dsn) is expected


def test_unreachable_server_raises_unavailable_quickly():
    dsn = f"postgresql://postgres:x@127.0.0.1:{free_port()}/postgres"
    started = time.monotonic()
    # The pool's own words show the 1 s connect timeout was used (the default is 5 s), which
    # a stopwatch on a loaded machine cannot; the bound only says it did not hang.
    with PostgresStorage(dsn, connect_timeout=1) as storage, \
            pytest.raises(StorageUnavailableError, match="after 1.00 sec"):
        storage.get("thread:x")
    assert time.monotonic() - started < 30


def test_wrong_password_is_a_permission_error(postgres_server, postgres_dsn):
    dsn = postgres_dsn.replace(PASSWORD, "wrong-password")
    # The refusal comes in milliseconds; the budget only has to outlast a loaded machine's
    # scheduling of the pool's connecting thread, or the wait ends before any attempt failed.
    with PostgresStorage(dsn, connect_timeout=15) as storage, \
            pytest.raises(StoragePermissionError, match="password authentication failed"):
        storage.health()


def test_missing_schema_is_a_schema_error(postgres_server):
    name = postgres_server.create_database("direct_no_schema")
    with PostgresStorage(postgres_server.dsn_for(name, password=PASSWORD)) as storage, \
            pytest.raises(StorageSchemaError, match="conversation-storage migrate"):
        storage.get("thread:x")


def test_statement_timeout_is_applied(postgres_dsn):
    with PostgresStorage(postgres_dsn, statement_timeout=1.5) as storage, storage._pool.connection() as conn:
        assert conn.execute("show statement_timeout").fetchone()[0] == "1500ms"


def test_a_restarted_server_is_used_again():
    # A server of its own: restarting the session's would disturb other tests.
    with PostgresServer() as server:
        with server.connect() as conn:
            apply_sql(conn)
        with PostgresStorage(server.dsn_for("postgres", password=PASSWORD), max_size=2) as storage:
            storage.setex("thread:durable", 60, '{"kept": true}')
            server.stop("fast")
            try:
                with pytest.raises(StorageUnavailableError):
                    storage.get("thread:durable")
            finally:
                server.start_process()
            # Pooled connections broken by the restart fail once each, then
            # the pool has fresh ones; the data is all there.
            assert wait_until_answered(lambda: storage.get("thread:durable"), "the pool to reach the restarted server",
                                       (StorageUnavailableError,)) == '{"kept": true}'


def test_a_schema_older_than_required_is_a_schema_error_naming_the_fix(postgres_server):
    # The pre-release files up to 009 are schema version 6, one below REQUIRED_SCHEMA_VERSION.
    name = postgres_server.create_database("direct_old_schema")
    with postgres_server.connect(name) as conn:
        apply_sql(conn, legacy_sql_files("010"))
        assert conn.execute("select public.conversation_storage_schema_version()").fetchone()[0] < REQUIRED_SCHEMA_VERSION
    with PostgresStorage(postgres_server.dsn_for(name, password=PASSWORD)) as storage, \
            pytest.raises(StorageSchemaError, match=r"version 6, this library needs 7: apply the newer files of sql/"):
        storage.health()
