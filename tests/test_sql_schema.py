"""The SQL files: idempotent, portable to plain Postgres, locked down like Supabase's linter wants."""

from __future__ import annotations

import pytest

from tests.support.database import apply_sql

FUNCTIONS = [
    "thread_set", "thread_set_before", "thread_get", "thread_delete", "cleanup_expired_threads", "storage_health",
    "thread_list", "thread_touch", "delete_user_threads", "delete_user_threads_batch", "thread_stats",
    "thread_fill_sizes", "thread_get_versioned", "thread_set_if_version",
    "conversation_storage_schema_version", "thread_replay", "conversation_storage_bury",
    "conversation_storage_tombstone_retention", "conversation_storage_record_erasure",
    "conversation_storage_check_deadline", "conversation_storage_lock_user", "thread_set_if_version_before",
    "thread_delete_before", "conversation_storage_apply_patch", "conversation_storage_next_version",
    "thread_fetch", "thread_put", "thread_patch",
]
TABLES = ["conversation_threads", "conversation_thread_tombstones", "conversation_thread_sweeps",
          "conversation_user_erasures"]
#: Runs as its owner to read pg_cron's cron.job, which Supabase grants to postgres only.
DEFINER = "conversation_storage_cleanup_job_scheduled"


@pytest.fixture(scope="module")
def supabase_db(local_supabase):
    """The Supabase stand-in's database, as the project owner ``postgres`` (not a superuser)."""
    with local_supabase.connect_as_owner() as conn:
        yield conn


def _function_oids(conn):
    return conn.execute(
        "select p.proname, p.oid from pg_proc p join pg_namespace n on n.oid = p.pronamespace"
        " where n.nspname = 'public' and p.proname = any(%s)",
        (FUNCTIONS,),
    ).fetchall()


def test_files_apply_twice_on_a_supabase_database(supabase_db):
    apply_sql(supabase_db)
    apply_sql(supabase_db)
    assert sorted(name for name, _ in _function_oids(supabase_db)) == sorted(FUNCTIONS)
    public = supabase_db.execute(
        "select p.proname from pg_proc p join pg_namespace n on n.oid = p.pronamespace where n.nspname = 'public'"
    ).fetchall()
    # Nothing else: the pre-release files' thread_replay_set and thread_replay_delete are gone.
    assert sorted(name for (name,) in public) == sorted([*FUNCTIONS, DEFINER, "conversation_storage_restrict"])


def test_files_apply_twice_on_plain_postgres_without_supabase_roles(postgres_server):
    # Roles are per cluster and the session's cluster has Supabase's, so a
    # second throwaway server proves the files need none of them.
    from tests.support.postgres_server import PostgresServer

    with PostgresServer() as plain, plain.connect() as conn:
        assert conn.execute("select count(*) from pg_roles where rolname = 'service_role'").fetchone()[0] == 0
        apply_sql(conn)
        apply_sql(conn)
        conn.execute("select public.thread_set('thread:plain', '{\"ok\": true}', 60)")
        assert conn.execute("select public.thread_get('thread:plain')").fetchone()[0] == '{"ok": true}'


@pytest.mark.parametrize("table", TABLES)
def test_row_level_security_is_on_with_no_policy(supabase_db, table):
    enabled = supabase_db.execute(
        "select relrowsecurity from pg_class where oid = %s::regclass", (f"public.{table}",)
    ).fetchone()[0]
    policies = supabase_db.execute(
        "select count(*) from pg_policies where schemaname = 'public' and tablename = %s", (table,)
    ).fetchone()[0]
    assert enabled is True
    assert policies == 0


@pytest.mark.parametrize("function", FUNCTIONS)
def test_function_has_fixed_search_path_and_runs_as_invoker(supabase_db, function):
    config, definer = supabase_db.execute(
        "select p.proconfig, p.prosecdef from pg_proc p where p.oid = %s::regproc",
        (f"public.{function}",),
    ).fetchone()
    assert 'search_path=""' in (config or [])
    assert definer is False


def test_the_one_definer_takes_nothing_and_only_service_role_runs_it(supabase_db):
    args, config, owner = supabase_db.execute(
        "select p.pronargs, p.proconfig, p.proowner::regrole::text from pg_proc p where p.oid = %s::regproc",
        (f"public.{DEFINER}",),
    ).fetchone()
    assert (args, owner) == (0, "postgres")
    assert 'search_path=""' in (config or [])
    may_run = {
        role: supabase_db.execute("select has_function_privilege(%s, %s, 'EXECUTE')",
                                  (role, f"public.{DEFINER}()")).fetchone()[0]
        for role in ("anon", "authenticated", "service_role")
    }
    assert may_run == {"anon": False, "authenticated": False, "service_role": True}


def test_service_role_cannot_use_the_cron_schema_yet_health_sees_the_job(supabase_db):
    # As on Supabase: pg_cron's schema belongs to postgres alone.
    assert supabase_db.execute("select has_schema_privilege('service_role', 'cron', 'USAGE')").fetchone()[0] is False
    with supabase_db.transaction():
        supabase_db.execute("set local role service_role")
        report = supabase_db.execute("select public.storage_health()").fetchone()[0]
    assert report["pg_cron_installed"] is True
    assert report["cleanup_job_scheduled"] is True


@pytest.mark.parametrize("function", FUNCTIONS)
def test_only_service_role_may_execute(supabase_db, function):
    oid = supabase_db.execute("select %s::regproc::oid", (f"public.{function}",)).fetchone()[0]
    allowed = {
        role: supabase_db.execute("select has_function_privilege(%s, %s, 'EXECUTE')", (role, oid)).fetchone()[0]
        for role in ("anon", "authenticated", "service_role")
    }
    acl = supabase_db.execute("select proacl::text from pg_proc where oid = %s", (oid,)).fetchone()[0]
    assert allowed == {"anon": False, "authenticated": False, "service_role": True}
    assert "=X/" not in acl.replace("service_role=X/", "").replace("postgres=X/", ""), f"PUBLIC may execute: {acl}"


@pytest.mark.parametrize("table", TABLES)
def test_anon_and_authenticated_have_no_table_privileges(supabase_db, table):
    for role in ("anon", "authenticated"):
        granted = supabase_db.execute(
            "select privilege_type from information_schema.role_table_grants"
            " where table_name = %s and grantee = %s",
            (table, role),
        ).fetchall()
        assert granted == []


@pytest.mark.parametrize("sequence", ["conversation_thread_versions", "conversation_thread_sweeps_id_seq"])
def test_anon_and_authenticated_cannot_use_the_sequences(supabase_db, sequence):
    def can(role: str, privilege: str) -> bool:
        return supabase_db.execute(
            "select has_sequence_privilege(%s, %s, %s)", (role, f"public.{sequence}", privilege)
        ).fetchone()[0]

    # service_role draws versions itself; the sweeps' identity needs no privilege of the inserting role.
    assert can("service_role", "USAGE") == (sequence == "conversation_thread_versions")
    for role in ("anon", "authenticated"):
        assert not any(can(role, privilege) for privilege in ("USAGE", "SELECT", "UPDATE"))


def test_indexes_are_the_needed_ones_only(supabase_db):
    rows = supabase_db.execute(
        "select indexdef from pg_indexes where schemaname = 'public' and tablename = 'conversation_threads'"
    ).fetchall()
    definitions = sorted(row[0].split(" USING ")[1] for row in rows)
    assert definitions == sorted([
        "btree (id)",
        "btree (thread_id)",
        # cleanup and thread_stats, sizes not known yet, thread_list's order with and without a user.
        "btree (expires_at) INCLUDE (size_bytes)",
        "btree (expires_at) WHERE (size_bytes IS NULL)",
        "btree (accessed_at DESC, thread_id)",
        "btree (user_id, accessed_at DESC, thread_id) WHERE (user_id IS NOT NULL)",
    ])


def test_table_refuses_keys_the_client_would_refuse(supabase_db):
    import psycopg

    for key in ("", "k" * 513):
        with pytest.raises(psycopg.errors.CheckViolation), supabase_db.transaction():
            supabase_db.execute("select public.thread_set(%s, '{}', 60)", (key,))


@pytest.mark.parametrize("ttl", [0, -5, None])
def test_thread_set_refuses_a_non_positive_ttl(supabase_db, ttl):
    import psycopg

    with pytest.raises(psycopg.errors.InvalidParameterValue), supabase_db.transaction():
        supabase_db.execute("select public.thread_set('thread:ttl', '{}', %s)", (ttl,))


def test_cleanup_reaches_tombstones_and_sweeps_through_their_indexes_only(supabase_db):
    # A sweep adds a row of keys per call, faster than autoanalyze sees them:
    # however stale the statistics, neither the purges nor the sweep's record
    # may read a whole tombstone or sweep table on every call.
    conn = supabase_db
    conn.execute("insert into public.conversation_thread_tombstones (thread_id, written_at)"
                 " select 'thread:recent-' || i, now() - interval '1 hour' from generate_series(1, 100000) i")
    conn.execute("insert into public.conversation_thread_tombstones (thread_id, written_at)"
                 " select 'thread:past-' || i, now() - interval '31 days' from generate_series(1, 30) i")
    conn.execute("insert into public.conversation_thread_sweeps (newest_written_at, thread_ids, written_ats)"
                 " select now() - interval '1 hour' + g * interval '1 ms',"
                 "        array['thread:recent-swept-' || g], array[now() - interval '1 hour']"
                 " from generate_series(1, 20000) g")
    conn.execute("insert into public.conversation_thread_sweeps (newest_written_at, thread_ids, written_ats)"
                 " select now() - interval '31 days', array['thread:past-a-' || g, 'thread:past-b-' || g],"
                 "        array[now() - interval '32 days', now() - interval '31 days']"
                 " from generate_series(1, 3) g")
    conn.execute("insert into public.conversation_threads (thread_id, conversation_data, expires_at, updated_at)"
                 " select 'thread:gone-' || i, '{}', now() - interval '1 day', now() - interval '2 days'"
                 " from generate_series(1, 40) i")
    left = ("select (select count(*) from public.conversation_thread_tombstones where thread_id like 'thread:past-%'),"
            " (select count(*) from public.conversation_thread_sweeps where newest_written_at < now() - interval '30 days')")
    swept = ("select count(*), count(distinct s.ctid) from public.conversation_thread_sweeps s,"
             " unnest(s.thread_ids, s.written_ats) u(thread_id, written_at)"
             " where u.thread_id like 'thread:gone-%' and u.written_at < now() - interval '1 day'")
    try:
        with conn.transaction():
            for _ in range(100):
                if conn.execute("select public.cleanup_expired_threads(25)").fetchone()[0] < 25:
                    break
            scans = conn.execute("select relname, seq_scan from pg_stat_xact_user_tables where relname in"
                                 " ('conversation_thread_tombstones', 'conversation_thread_sweeps')").fetchall()
        assert sorted(scans) == [("conversation_thread_sweeps", 0), ("conversation_thread_tombstones", 0)]
        assert conn.execute(left).fetchone() == (0, 0)
        assert conn.execute(swept).fetchone() == (40, 2), "40 keys, 25 then 15, each sweep in one row (they expired first)"
        assert conn.execute("select count(*) from public.conversation_thread_tombstones"
                            " where thread_id like 'thread:gone-%'").fetchone() == (0,)
        assert conn.execute("select count(*) from public.conversation_threads"
                            " where thread_id like 'thread:gone-%'").fetchone() == (0,)
    finally:
        conn.execute("delete from public.conversation_threads where thread_id like 'thread:gone-%'")
        conn.execute("delete from public.conversation_thread_tombstones where thread_id like 'thread:recent-%'"
                     " or thread_id like 'thread:past-%'")
        conn.execute("delete from public.conversation_thread_sweeps s where exists (select 1 from"
                     " unnest(s.thread_ids) k where k like 'thread:recent-swept-%' or k like 'thread:past-%'"
                     " or k like 'thread:gone-%')")
