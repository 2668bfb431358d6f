"""Operator calls on 1,000,000 threads through Supabase's API, under its statement timeouts.

service_role has no statement_timeout of its own and inherits authenticator's
8 s, which the local stand-in sets as Supabase does: a call that outgrew it
would be cancelled and raise here. No timings are asserted; every call must
succeed and agree with a direct count in SQL.
"""

from __future__ import annotations

import pytest
from supabase import create_client

from scripts.benchmarks.operator_calls import HEAVY_USER, TYPICAL_USER, populate
from tests.support.database import apply_sql, sql_files

# A stand-in of this module's own: it rebuilds indexes and pauses pg_cron, which no other test may see.
from tests.support.local_supabase import (
    module_local_supabase,  # noqa: F401
)
from utils.infrastructure.backends.memory_storage import InMemoryStorage
from utils.infrastructure.backends.sqlite_storage import SQLiteStorage
from utils.infrastructure.backends.supabase_storage import SupabaseStorage
from utils.infrastructure.remote.remote_calls import USER_ERASE_BATCH
from utils.infrastructure.remote.schema import SCHEMA_VERSION

ROWS = 1_000_000
HEAVY_ROWS = 100_000
# The indexes that keep the operator calls fast (sql/versioned/001_tables.sql).
INDEXES = [f"public.conversation_threads_{name}_idx"
               for name in ("accessed_at", "user_accessed_at", "expires_at_size", "size_unknown")]
# Live rows as thread_list orders them, and each one's size as the functions report it.
SIZE = "coalesce(size_bytes, octet_length(conversation_data::text))"
LISTED = (f"select thread_id, {SIZE} from public.conversation_threads where expires_at > now()"
          " and (%(user)s::text is null or user_id = %(user)s) order by accessed_at desc, thread_id limit 50")



@pytest.fixture(scope="module")
def project(local_supabase):
    """The stand-in with a million threads of about 2 KB (enough for 004's functions to time out).

    The operator calls' indexes are dropped for the load and rebuilt by
    applying the schema to the full table, as on a project that upgrades:
    about twice as fast as maintaining them row by row.
    """
    with local_supabase.connect() as admin, local_supabase.connect_as_owner() as owner:
        # The hourly pg_cron cleanup must not change the counts mid-module.
        admin.execute("select cron.alter_job(jobid, active := false) from cron.job"
                      " where jobname = 'cleanup-expired-threads'")
        admin.execute("truncate public.conversation_threads")
        owner.execute(f"drop index if exists {', '.join(INDEXES)}")
        try:
            populate(admin, ROWS, heavy=HEAVY_ROWS, words=100, random_keys=False, vacuum=False)
        finally:
            apply_sql(owner, sql_files())
    yield local_supabase
    with local_supabase.connect() as admin:
        admin.execute("truncate public.conversation_threads")
        admin.execute("select cron.alter_job(jobid, active := true) from cron.job"
                      " where jobname = 'cleanup-expired-threads'")


@pytest.fixture(scope="module")
def storage(project):
    # A client timeout above the server's 8 s: the server's limit is the one tested.
    with SupabaseStorage(project.url, project.secret_key, timeout_seconds=30) as storage:
        yield storage


@pytest.fixture(scope="module")
def sql(project):
    """Run a statement as the superuser; its rows, if it returns any."""
    with project.connect() as conn:
        def run(query, params=None):
            cursor = conn.execute(query, params)
            return cursor.fetchall() if cursor.description else None
        yield run


def test_api_calls_run_under_authenticators_8s_statement_timeout(project, sql):
    sql("create function public.operator_scale_probe() returns jsonb language sql stable"
        " set search_path = '' as $$ select pg_catalog.jsonb_build_object("
        " 'role', current_user, 'timeout', pg_catalog.current_setting('statement_timeout')) $$")
    sql("revoke execute on function public.operator_scale_probe() from public, anon, authenticated")
    sql("grant execute on function public.operator_scale_probe() to service_role")
    try:
        seen = create_client(project.url, project.secret_key).rpc("operator_scale_probe").execute().data
    finally:
        sql("drop function public.operator_scale_probe()")
    assert seen == {"role": "service_role", "timeout": "8s"}


def test_applying_the_schema_again_to_the_full_table_changes_nothing(project, sql):
    state = ("select indexdef from pg_indexes where tablename = 'conversation_threads'"
             " union all select count(*)::text from public.conversation_threads order by 1")
    before = sql(state)
    with project.connect_as_owner() as owner:
        apply_sql(owner, sql_files() + sql_files())
    assert sql(state) == before
    assert sql("select public.conversation_storage_schema_version()") == [(SCHEMA_VERSION,)]


def test_stats_count_every_row(storage, sql):
    [(live, expired, live_bytes, total_bytes)] = sql(
        f"select count(*) filter (where expires_at > now()), count(*) filter (where expires_at <= now()),"
        f" sum({SIZE}) filter (where expires_at > now()), sum({SIZE}) from public.conversation_threads")
    assert live + expired == ROWS and expired > ROWS // 5
    assert storage.stats() == {"live": live, "expired": expired, "live_bytes": live_bytes,
                               "total_bytes": total_bytes}


@pytest.mark.parametrize("user", [None, HEAVY_USER, TYPICAL_USER])
def test_list_returns_the_most_recently_accessed_live_threads(storage, sql, user):
    listed = storage.list_threads(user_id=user, limit=50)
    assert [(t.key, t.size_bytes) for t in listed] == sql(LISTED, {"user": user})
    assert len(listed) == 50
    if user:
        assert {t.user_id for t in listed} == {user}


def test_sizes_written_before_009_are_measured_then_filled_in(project, storage, sql):
    before = storage.stats()
    sql("update public.conversation_threads set size_bytes = null where user_id = %s", (TYPICAL_USER,))
    assert storage.stats() == before  # unknown sizes are measured from the documents
    client = create_client(project.url, project.secret_key)
    filled = client.rpc("thread_fill_sizes", {"p_batch_size": 100_000}).execute().data
    assert filled == sql("select count(*) from public.conversation_threads where user_id = %s",
                         (TYPICAL_USER,))[0][0] > 0
    assert client.rpc("thread_fill_sizes", {}).execute().data == 0
    assert storage.stats() == before


def test_touch_gives_a_live_thread_a_new_lifetime(storage, sql):
    [(key,)] = sql("select thread_id from public.conversation_threads where expires_at > now() limit 1")
    assert storage.touch(key, 7 * 86400) is True
    assert sql("select expires_at > now() + interval '6 days' from public.conversation_threads"
               " where thread_id = %s", (key,)) == [(True,)]


def test_cleanup_batches_delete_expired_rows_only(storage, sql):
    count = "select count(*) filter (where expires_at <= now()), count(*) from public.conversation_threads"
    [(expired, total)] = sql(count)
    assert [storage.cleanup_expired(1000) for _ in range(5)] == [1000] * 5
    assert sql(count) == [(expired - 5000, total - 5000)]


@pytest.mark.parametrize("user", [TYPICAL_USER, HEAVY_USER])
def test_delete_user_threads_erases_all_of_a_users_threads_in_bounded_calls(project, storage, sql, user):
    owned = "select count(*) from public.conversation_threads where user_id = %s"
    [(count,)] = sql(owned, (user,))
    [(others,)] = sql("select count(*) from public.conversation_threads where user_id is distinct from %s", (user,))
    assert count > 0
    project.gateway.reset_counts()
    assert storage.delete_user_threads(user) == count
    assert project.gateway.counts == {"delete_user_threads_batch": count // USER_ERASE_BATCH + 1}
    assert sql(owned, (user,)) == [(0,)]
    assert sql("select count(*) from public.conversation_threads") == [(others,)]


def test_every_backend_reports_the_size_of_the_text_as_written(storage, tmp_path):
    compact = '{"turns":[{"role":"user","content":"naïve café"}],"n":1}'  # jsonb would print it longer
    backends = [storage, InMemoryStorage(), SQLiteStorage(tmp_path / "threads.sqlite3")]
    for backend in backends:
        backend.set_with_ttl("thread:compact", 60, compact, user_id="size-check")
    sizes = [[t.size_bytes for t in b.list_threads(user_id="size-check")] for b in backends]
    assert sizes == [[len(compact.encode())]] * 3
    for backend in backends[1:]:
        backend.close()


@pytest.mark.parametrize("function", ["delete_user_threads_batch(text, integer)", "thread_fill_sizes(integer)"])
def test_new_functions_are_locked_down(sql, function):
    [(config, definer, may_run)] = sql(
        "select proconfig, prosecdef, array[has_function_privilege('anon', oid, 'EXECUTE'),"
        " has_function_privilege('authenticated', oid, 'EXECUTE'),"
        " has_function_privilege('service_role', oid, 'EXECUTE')]"
        f" from pg_proc where oid = 'public.{function}'::regprocedure")
    assert 'search_path=""' in config and definer is False
    assert may_run == [False, False, True]
