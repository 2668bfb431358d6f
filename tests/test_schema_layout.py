"""Databases built with the pre-release files reach, through migrate, exactly the schema of a fresh one.

The pre-release layout (sql/001 to sql/015 at tests.support.history.PRE_RELEASE_LAYOUT, applied
once each) may have built databases that hold threads. ``migrate`` brings any
prefix of it to today's layout (sql/versioned, sql/repeatable) keeping every
row, and the catalog then equals that of a database built from the new files
alone: functions, privileges, indexes, triggers, columns, constraints,
row level security, policies and comments.
"""

from __future__ import annotations

import pytest

from tests.support.database import legacy_sql_files
from tests.support.postgres_server import PASSWORD, PostgresServer
from utils.infrastructure.operations.migrations import migrate

#: Supabase's API roles, and the default privileges that give them every new object (supabase_init.sql).
_SUPABASE_ROLES = """
create role anon nologin noinherit;
create role authenticated nologin noinherit;
create role service_role nologin noinherit bypassrls;
"""
_SUPABASE_DEFAULTS = """
alter default privileges in schema public grant all on tables    to anon, authenticated, service_role;
alter default privileges in schema public grant all on functions to anon, authenticated, service_role;
alter default privileges in schema public grant all on sequences to anon, authenticated, service_role;
"""

_CATALOG = {
    "functions": """
        select p.oid::regprocedure::text, pg_get_functiondef(p.oid), p.prosecdef, p.proconfig::text
          from pg_proc p join pg_namespace n on n.oid = p.pronamespace where n.nspname = 'public'
    """,
    "function privileges": """
        select p.oid::regprocedure::text, coalesce(r.rolname, 'PUBLIC'), a.privilege_type, a.is_grantable
          from pg_proc p join pg_namespace n on n.oid = p.pronamespace
         cross join lateral aclexplode(coalesce(p.proacl, acldefault('f', p.proowner))) a
          left join pg_roles r on r.oid = a.grantee
         where n.nspname = 'public'
    """,
    "table and sequence privileges": """
        select c.relname, c.relkind::text, coalesce(r.rolname, 'PUBLIC'), a.privilege_type, a.is_grantable
          from pg_class c join pg_namespace n on n.oid = c.relnamespace
         cross join lateral aclexplode(coalesce(c.relacl, acldefault(
                   case when c.relkind = 'S' then 's' else 'r' end::"char", c.relowner))) a
          left join pg_roles r on r.oid = a.grantee
         where n.nspname = 'public' and c.relkind in ('r', 'S')
    """,
    "indexes": "select tablename, indexname, indexdef from pg_indexes where schemaname = 'public'",
    "triggers": """
        select t.tgrelid::regclass::text, t.tgname, pg_get_triggerdef(t.oid), t.tgenabled::text
          from pg_trigger t join pg_class c on c.oid = t.tgrelid join pg_namespace n on n.oid = c.relnamespace
         where n.nspname = 'public' and not t.tgisinternal
    """,
    "columns": """
        select c.relname, a.attname, format_type(a.atttypid, a.atttypmod), pg_get_expr(d.adbin, d.adrelid),
               a.attnotnull
          from pg_attribute a join pg_class c on c.oid = a.attrelid join pg_namespace n on n.oid = c.relnamespace
          left join pg_attrdef d on d.adrelid = a.attrelid and d.adnum = a.attnum
         where n.nspname = 'public' and c.relkind = 'r' and a.attnum > 0 and not a.attisdropped
    """,
    "constraints": """
        select c.conrelid::regclass::text, c.conname, pg_get_constraintdef(c.oid)
          from pg_constraint c join pg_namespace n on n.oid = c.connamespace where n.nspname = 'public'
    """,
    "sequences": """
        select sequencename, data_type::text, start_value, increment_by, min_value, max_value, cycle
          from pg_sequences where schemaname = 'public'
    """,
    "row level security": """
        select c.relname, c.relrowsecurity, c.relforcerowsecurity
          from pg_class c join pg_namespace n on n.oid = c.relnamespace
         where n.nspname = 'public' and c.relkind = 'r'
    """,
    "policies": "select tablename, policyname, cmd, roles::text, qual, with_check from pg_policies"
                " where schemaname = 'public'",
    "comments": """
        select c.relname, d.objsubid, d.description
          from pg_description d join pg_class c on c.oid = d.objoid and d.classoid = 'pg_class'::regclass
          join pg_namespace n on n.oid = c.relnamespace where n.nspname = 'public'
        union all
        select p.oid::regprocedure::text, d.objsubid, d.description
          from pg_description d join pg_proc p on p.oid = d.objoid and d.classoid = 'pg_proc'::regclass
          join pg_namespace n on n.oid = p.pronamespace where n.nspname = 'public'
    """,
}

#: Every kept table's rows, in full.
_ROWS = {
    "conversation_threads": "select * from public.conversation_threads order by thread_id",
    "conversation_thread_tombstones": "select * from public.conversation_thread_tombstones order by thread_id",
    "conversation_thread_sweeps": "select * from public.conversation_thread_sweeps order by swept_at, thread_ids",
    "conversation_user_erasures": "select * from public.conversation_user_erasures order by user_id",
}


@pytest.fixture(scope="module")
def server():
    """A cluster of its own with Supabase's API roles, so privileges are compared as they matter."""
    with PostgresServer() as server:
        with server.connect() as conn:
            conn.execute(_SUPABASE_ROLES)
        yield server


def _database(server, name: str):
    server.create_database(name)
    conn = server.connect(name)
    conn.execute(_SUPABASE_DEFAULTS)
    return conn


def _catalog(conn) -> dict[str, list[tuple]]:
    return {part: sorted(conn.execute(query).fetchall(), key=repr) for part, query in _CATALOG.items()}


def _rows(conn) -> dict[str, list[tuple]]:
    return {table: conn.execute(query).fetchall() for table, query in _ROWS.items()
            if conn.execute("select to_regclass(%s)", (f"public.{table}",)).fetchone()[0]}


def _has(conn, function: str) -> bool:
    return conn.execute("select to_regprocedure(%s)", (function,)).fetchone()[0] is not None


def _fill(conn) -> None:
    """Threads of every kind the layout holds: live with and without user and metadata, expired, deleted, erased."""
    conn.execute("""
        insert into public.conversation_threads (thread_id, user_id, conversation_data, expires_at, metadata)
        values ('thread:plain', null, '{"turns": [1, 2]}', now() + interval '1 hour', '{}'),
               ('thread:owned', 'alice', '{"turns": ["é"]}', now() + interval '2 hours', '{"title": "trip"}'),
               ('thread:expired', 'alice', '[]', now() - interval '1 minute', '{}'),
               ('thread:erased', 'bob', '{"secret": 1}', now() + interval '1 hour', '{}'),
               ('thread:doomed', null, 'null', now() + interval '1 hour', '{}')
    """)
    if _has(conn, "public.thread_set(text, text, integer, text, jsonb)"):
        conn.execute("""select public.thread_set('thread:set', '{"a": 1}', 600, 'carol', '{"k": "v"}')""")
    if _has(conn, "public.thread_put(text, text, integer, text, jsonb, timestamptz)"):
        conn.execute("""select public.thread_put('thread:put', '{"b": 2}', 600)""")
    if _has(conn, "public.delete_user_threads_batch(text, integer)"):
        conn.execute("select public.delete_user_threads_batch('bob', 100)")
    elif _has(conn, "public.delete_user_threads(text)"):
        conn.execute("select public.delete_user_threads('bob')")
    if _has(conn, "public.thread_delete(text)"):
        conn.execute("select public.thread_delete('thread:doomed')")


@pytest.fixture(scope="module")
def fresh_catalog(server):
    with _database(server, "layout_fresh") as conn:
        assert migrate(server.dsn_for("layout_fresh", password=PASSWORD))
        return _catalog(conn)


@pytest.mark.parametrize("before", ["002", "006", "010", "013", None],
                         ids=["001", "001-005", "001-009", "001-012", "001-015"])
def test_a_pre_release_database_migrates_to_the_fresh_schema_keeping_its_rows(server, fresh_catalog, before):
    name = f"layout_legacy_{before or 'all'}"
    with _database(server, name) as conn:
        for path in legacy_sql_files(before):
            with conn.transaction():
                conn.execute(path.read_text())
        _fill(conn)
        rows = _rows(conn)
        assert rows["conversation_threads"]

        migrate(server.dsn_for(name, password=PASSWORD))

        after = _rows(conn)
        for table, kept in rows.items():
            columns = [c.name for c in conn.execute(f"select * from public.{table} limit 0").description or []]
            assert len(after[table]) == len(kept), table
            if table == "conversation_threads" and len(kept[0]) < len(columns):
                # Columns the older layout did not have yet (version, updated_at, size_bytes) came last.
                after[table] = [row[:len(kept[0])] for row in after[table]]
            assert after[table] == kept, table
        catalog = _catalog(conn)
    for part in _CATALOG:
        assert catalog[part] == fresh_catalog[part], part
    assert migrate(server.dsn_for(name, password=PASSWORD)) == []


def test_the_catalog_comparison_sees_a_missing_index(server, fresh_catalog):
    # What a baseline that forgot an index would leave: the test above would fail on it.
    with _database(server, "layout_missing_index") as conn:
        migrate(server.dsn_for("layout_missing_index", password=PASSWORD))
        conn.execute("drop index public.conversation_threads_size_unknown_idx")
        conn.execute("comment on table public.conversation_user_erasures is 'other'")
        catalog = _catalog(conn)
    assert catalog["indexes"] != fresh_catalog["indexes"]
    assert catalog["comments"] != fresh_catalog["comments"]
    assert catalog["functions"] == fresh_catalog["functions"]
