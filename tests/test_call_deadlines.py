"""Every Postgres call ends within its timeout, whatever the server or a pooler does.

A stopped server (SIGSTOP) and a real PgBouncer that drops the client's
statement_timeout, each with calls that would otherwise wait as long as the
socket does; and a restarted server, whose closed connections sit in the pool.
"""

from __future__ import annotations

import json
import threading
import time

import psycopg
import pytest

from tests.support.database import apply_sql
from tests.support.outages import frozen
from tests.support.pgbouncer import PgBouncer
from tests.support.postgres_server import PASSWORD, PostgresServer
from tests.support.rows import thread_row
from utils.infrastructure.backends.postgres_storage import PostgresStorage, grace_seconds
from utils.infrastructure.contract.errors import StorageConfigurationError, StorageUnavailableError
from utils.infrastructure.failover.failover_storage import DEGRADED, FailoverStorage
from utils.infrastructure.failover.spool import Spool

TIMEOUT = 2.0
#: What a loaded 2-core machine may add to the client's own bound; the failures are unbounded.
SLACK = 2.0
#: How long a hung call is left before the test ends it, so that it can fail rather than hang.
HUNG = 15.0


@pytest.fixture
def server(stoppable_postgres):
    """The session's Postgres of its own, which tests may stop (conftest.py)."""
    return stoppable_postgres


def _timed(call) -> tuple[float, BaseException | None]:
    """Run ``call`` in a thread; (seconds it took, what it raised), or (inf, None) if still running after HUNG."""
    outcome: dict = {}

    def run() -> None:
        started = time.monotonic()
        try:
            call()
        except BaseException as exc:  # noqa: BLE001 (handed to the test)
            outcome["error"] = exc
        outcome["seconds"] = time.monotonic() - started

    worker = threading.Thread(target=run, daemon=True)
    worker.start()
    worker.join(HUNG)
    return outcome.get("seconds", float("inf")), outcome.get("error")


def test_a_stopped_server_costs_a_write_no_more_than_its_timeout_and_never_runs_it_late(server, tmp_path):
    key = "thread:frozen"
    primary = PostgresStorage(server.dsn_for("postgres", password=PASSWORD), connect_timeout=1,
                              statement_timeout=TIMEOUT)
    with FailoverStorage(primary, Spool(tmp_path / "spool.sqlite3"), first_probe_after=0.5,
                         max_probe_interval=1.0) as storage:
        storage.setex(key, 3600, '{"v": 0}')
        with frozen(server):
            seconds, error = _timed(lambda: storage.setex(key, 3600, '{"v": 1}'))
            state = storage.status()["state"]
            storage.setex(key, 3600, '{"v": 2}')  # the circuit is open: spooled at once
        # Resumed, the server reads the abandoned write of v1: past its deadline, it must refuse it.
        assert storage.wait_until_healthy(30), storage.status()
    assert error is None, "the write was spooled, not refused"
    assert seconds < TIMEOUT + grace_seconds(TIMEOUT) + SLACK, f"setex took {seconds:.1f} s"
    assert state == DEGRADED
    assert thread_row(server, key) == {"v": 2}
    assert "after its deadline" in server.log_tail(200), "the late write reached the server and was refused"


def test_a_stopped_server_costs_a_read_no_more_than_its_timeout(server):
    with PostgresStorage(server.dsn_for("postgres", password=PASSWORD), connect_timeout=1,
                         statement_timeout=TIMEOUT) as storage:
        storage.setex("thread:frozen-read", 3600, "{}")
        with frozen(server):
            seconds, error = _timed(lambda: storage.get("thread:frozen-read"))
        assert storage.get("thread:frozen-read") == "{}", "a fresh connection replaces the one cut"
    assert isinstance(error, StorageUnavailableError) and "did not answer" in str(error), error
    assert seconds < TIMEOUT + grace_seconds(TIMEOUT) + SLACK, f"get took {seconds:.1f} s"


def test_through_pgbouncer_a_call_on_a_locked_row_ends_within_the_timeout(server):
    key = "thread:locked-behind-pgbouncer"
    with PgBouncer(server) as bouncer, PostgresStorage(
            bouncer.dsn_for(), transaction_pooler=True, connect_timeout=1, statement_timeout=TIMEOUT,
            near_cache=False) as storage:
        storage.setex(key, 3600, '{"v": 0}')
        with server.connect() as locker, locker.transaction():
            locker.execute("select 1 from public.conversation_threads where thread_id = %s for update", (key,))
            seconds, error = _timed(lambda: storage.setex(key, 3600, '{"v": 1}'))
        assert storage.get(key) is not None, "the pooler and the pool still serve calls"
    assert isinstance(error, StorageUnavailableError), error
    assert seconds < TIMEOUT + grace_seconds(TIMEOUT) + SLACK, f"setex took {seconds:.1f} s"


def test_a_restarted_server_costs_no_call_an_error(tmp_path):
    with PostgresServer() as server:
        with server.connect() as conn:
            apply_sql(conn)
        with PostgresStorage(server.dsn_for("postgres", password=PASSWORD), min_size=4, max_size=4,
                             connect_timeout=2, statement_timeout=TIMEOUT) as storage:
            _use_every_connection(storage, 4)
            server.stop("immediate")
            server.start_process()
            errors = []
            for i in range(12):
                try:
                    storage.setex(f"thread:after-restart-{i}", 3600, json.dumps({"i": i}))
                    assert storage.get(f"thread:after-restart-{i}") == json.dumps({"i": i})
                except StorageUnavailableError as exc:
                    errors.append(exc)
    assert errors == []


def _use_every_connection(storage: PostgresStorage, count: int) -> None:
    """Hold ``count`` connections at once, so that the pool has that many when it is restarted."""
    barrier = threading.Barrier(count)

    def hold() -> None:
        with storage._pool.connection() as conn:
            barrier.wait(timeout=30)
            conn.execute("select 1")

    workers = [threading.Thread(target=hold) for _ in range(count)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join(timeout=30)
    assert storage._pool.get_stats()["pool_size"] == count


def test_a_connection_the_server_closed_is_never_used(server):
    with PostgresStorage(server.dsn_for("postgres", password=PASSWORD), min_size=1, max_size=1) as storage:
        storage.setex("thread:killed-backend", 3600, "{}")
        with server.connect() as admin:
            killed = admin.execute(
                "select pg_terminate_backend(pid, 10000) from pg_stat_activity"
                " where application_name = 'conversation-storage' and pid <> pg_backend_pid()").fetchall()
        # With a timeout, pg_terminate_backend returns once the backend has exited: its goodbye is sent.
        assert killed and all(ok for (ok,) in killed)
        assert storage.get("thread:killed-backend") == "{}"


def test_the_server_refuses_a_write_that_arrives_after_its_deadline(server):
    with psycopg.connect(server.dsn_for("postgres", password=PASSWORD), autocommit=True) as conn, \
            pytest.raises(psycopg.errors.QueryCanceled, match="after its deadline"):
        conn.execute("select public.thread_put('thread:late', '{}', 60, p_deadline => now() - interval '1 ms')")


def test_the_asyncio_client_drops_closed_connections_and_bounds_its_calls_too(server):
    import asyncio

    from utils.infrastructure.backends.postgres_storage import AsyncPostgresStorage

    async def scenario() -> tuple[float, BaseException | None, str | None]:
        storage = await AsyncPostgresStorage.create(server.dsn_for("postgres", password=PASSWORD), min_size=1,
                                                    max_size=1, connect_timeout=1, statement_timeout=TIMEOUT)
        try:
            await storage.setex("thread:async-deadline", 3600, "{}")
            with server.connect() as admin:
                admin.execute("select pg_terminate_backend(pid, 10000) from pg_stat_activity"
                              " where application_name = 'conversation-storage' and pid <> pg_backend_pid()")
            after_kill = await storage.get("thread:async-deadline")
            started, error = time.monotonic(), None
            with frozen(server):
                try:
                    await asyncio.wait_for(storage.get("thread:async-deadline"), HUNG)
                except BaseException as exc:  # noqa: BLE001 (handed to the test)
                    error = exc
                seconds = time.monotonic() - started
            return seconds, error, after_kill
        finally:
            await storage.close()

    seconds, error, after_kill = asyncio.run(scenario())
    assert after_kill == "{}"
    assert isinstance(error, StorageUnavailableError) and "did not answer" in str(error), error
    assert seconds < TIMEOUT + grace_seconds(TIMEOUT) + SLACK, f"get took {seconds:.1f} s"


def test_a_pooler_that_refuses_a_startup_option_is_named_with_the_setting_to_change(server):
    # PgBouncer as it ships: it refuses `options`, which a direct connection sends for statement_timeout.
    with PgBouncer(server, ignore_startup_parameters="extra_float_digits") as bouncer, \
            PostgresStorage(bouncer.dsn_for(), connect_timeout=1, statement_timeout=TIMEOUT) as storage, \
            pytest.raises(StorageConfigurationError, match="CONVERSATION_POSTGRES_TRANSACTION_POOLER=true") as info:
        storage.get("thread:x")
    assert "unsupported startup parameter" in str(info.value)


def test_an_unreachable_server_is_named_with_the_reason(server):
    from tests.support.postgres_server import free_port

    dsn = server.dsn_for("postgres", password=PASSWORD).replace(f":{server.port}/", f":{free_port()}/")
    with PostgresStorage(dsn, connect_timeout=1) as storage, \
            pytest.raises(StorageUnavailableError, match="Connection refused"):
        storage.get("thread:x")
