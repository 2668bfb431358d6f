"""PostgresStorage's prepared statements against what the world does to them.

The sync backend prepares each statement once per connection
(backends/libpq_calls.py). A server may lose them (DISCARD ALL or DEALLOCATE
from a pooler's reset or an operator) and a migration may recreate a
function with another return type, which makes a prepared call fail with
"cached plan must not change result type". Neither error runs the statement,
so the call is prepared again and sent once more.
"""

from __future__ import annotations

import threading

import psycopg
import pytest
from psycopg.adapt import PyFormat
from psycopg.types.json import Jsonb

from tests.support.database import apply_sql
from tests.support.postgres_server import PASSWORD
from utils.infrastructure.backends.libpq_calls import parameters
from utils.infrastructure.backends.postgres_storage import PostgresStorage
from utils.infrastructure.contract.errors import StorageUnavailableError

DOCUMENT = '{"turns": ["hello"]}'


def _prepared(conn: psycopg.Connection) -> set[str]:
    return {row[0] for row in conn.execute("select name from pg_prepared_statements")}


@pytest.mark.parametrize("reset", ["deallocate all", "discard all"])
def test_statements_the_server_dropped_are_prepared_again(postgres_dsn, reset):
    with PostgresStorage(postgres_dsn, min_size=1, max_size=1) as storage:
        storage.setex("thread:reset", 60, DOCUMENT)
        assert storage.get("thread:reset") == DOCUMENT
        with storage._pool.connection() as conn:
            assert _prepared(conn), "the calls above were prepared"
            conn.execute(reset)
            assert not _prepared(conn)
        assert storage.get("thread:reset") == DOCUMENT
        storage.setex("thread:reset", 60, '{"turns": ["hello", "again"]}')
        assert storage.get("thread:reset") == '{"turns": ["hello", "again"]}'
        with storage._pool.connection() as conn:
            assert _prepared(conn), "prepared again, not sent unprepared from then on"


def test_a_function_recreated_with_another_return_type_is_called_again(postgres_server):
    # A database of its own: the test replaces thread_get.
    name = postgres_server.create_database("prepared_calls_migration")
    with postgres_server.connect(name) as conn:
        apply_sql(conn)
    with PostgresStorage(postgres_server.dsn_for(name, password=PASSWORD), min_size=1, max_size=1) as storage:
        storage.setex("thread:migrated", 60, DOCUMENT)
        assert storage.get("thread:migrated") == DOCUMENT  # thread_get(text) returns text, now prepared
        with postgres_server.connect(name) as conn:
            conn.execute("drop function public.thread_get(text)")
            conn.execute(
                "create function public.thread_get(p_thread_id text) returns varchar"
                " language sql stable set search_path = '' as"
                " $$ select t.conversation_data::text from public.conversation_threads t"
                " where t.thread_id = p_thread_id $$")
        assert storage.get("thread:migrated") == DOCUMENT


def test_a_first_call_that_fails_on_the_server_leaves_its_statement_prepared(postgres_server, postgres_dsn):
    """The prepare and the call travel together; a call refused after a good prepare keeps the statement."""
    with PostgresStorage(postgres_dsn, min_size=1, max_size=1, statement_timeout=0.5) as storage:
        storage.setex("thread:locked", 60, DOCUMENT)
        with storage._pool.connection() as conn:
            before = _prepared(conn)
        # An operator's open transaction holds the row: the delete waits, then times out.
        dbname = psycopg.conninfo.conninfo_to_dict(postgres_dsn)["dbname"]
        locked = threading.Event()
        release = threading.Event()

        def hold_row() -> None:
            with postgres_server.connect(dbname) as operator, operator.transaction():
                operator.execute("select 1 from public.conversation_threads where thread_id = 'thread:locked' for update")
                locked.set()
                release.wait(30)

        holder = threading.Thread(target=hold_row)
        holder.start()
        try:
            assert locked.wait(30)
            with pytest.raises(StorageUnavailableError, match="57014"):
                storage.delete("thread:locked")
        finally:
            release.set()
            holder.join()
        with storage._pool.connection() as conn:
            after = _prepared(conn)
        assert len(after - before) == 1, "the timed-out delete's statement stays prepared"
        assert storage.delete("thread:locked") is True
        with storage._pool.connection() as conn:
            assert _prepared(conn) == after, "the second delete used it"
        assert storage.get("thread:locked") is None


@pytest.mark.parametrize("value", [
    "thread:k", "", "é\u2028", 0, 1, -1, 2**15 - 1, 2**15, -(2**15), -(2**15) - 1, 2**31 - 1, 2**31,
    -(2**31) - 1, 2**63 - 1, 2**63, -(2**63) - 1, 10**30, True, False,
    {"user": "alice", "big": 2**70, "nested": {"x": [1.5, None]}},
])
def test_parameters_have_the_types_and_text_psycopg_gives_them(value):
    """Same types, same function: the server resolves ``fn(p => $1)`` from them."""
    dumped = Jsonb(value) if isinstance(value, dict) else value
    dumper = psycopg.adapters.get_dumper(type(dumped), PyFormat.TEXT)(type(dumped))
    dumper = dumper.upgrade(dumped, PyFormat.TEXT)
    (oid,), (text,) = parameters([value], "utf-8")
    assert oid == dumper.oid
    assert text == bytes(dumper.dump(dumped))


def test_a_null_parameter_has_no_type():
    assert parameters([None], "utf-8") == ((0,), [None])
