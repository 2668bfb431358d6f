"""The gateway's schema cache against PostgREST's: functions and role settings as of the last load.

A plain database (no event trigger) needs ``NOTIFY pgrst`` after DDL, as a
plain PostgREST does; the Supabase-shaped one reloads by itself through
Supabase's ``pgrst_ddl_watch`` / ``pgrst_drop_watch`` event triggers. Role
settings are read again on ``NOTIFY pgrst, 'reload config'``. Everything goes
over HTTP through the gateway with the real database behind.
"""

from __future__ import annotations

import httpx
import psycopg
import pytest
from psycopg.conninfo import make_conninfo

# A stand-in of this module's own: its DDL and role settings (cluster-wide) must not reach other tests.
from tests.support.local_supabase import (
    JWT_SECRET,
    make_key,
    module_local_supabase,  # noqa: F401
)
from tests.support.rpc_gateway import RpcGateway

PLAIN_DB = "gw_schema_cache_plain"



@pytest.fixture(scope="module")
def plain(local_supabase):
    """A gateway in front of a database of the same cluster without Supabase's event triggers."""
    with local_supabase.connect() as admin:
        admin.execute(f"drop database if exists {PLAIN_DB} with (force)")
        admin.execute(f"create database {PLAIN_DB}")
    gateway = RpcGateway(make_conninfo(local_supabase.gateway.dsn, dbname=PLAIN_DB), JWT_SECRET,
                         keys=local_supabase.keys).start()
    yield gateway
    gateway.stop()
    with local_supabase.connect() as admin:
        admin.execute(f"drop database if exists {PLAIN_DB} with (force)")


@pytest.fixture
def plain_sql(local_supabase, plain):
    """Run statements as the superuser in the plain database."""
    with local_supabase.server.connect(PLAIN_DB) as conn:
        yield conn.execute


def call(gateway: RpcGateway, key: str, fn: str, body: dict | None = None, *, token: str | None = None):
    """POST /rest/v1/rpc/{fn} as supabase-py sends it: apikey ``key``, Bearer ``token`` (else the key)."""
    return httpx.post(f"{gateway.url}/rest/v1/rpc/{fn}", json=body or {}, timeout=15,
                      headers={"apikey": key, "Authorization": f"Bearer {token or key}"})


def test_a_function_created_after_start_is_pgrst202_until_notify_pgrst(plain, plain_sql, local_supabase):
    key = local_supabase.secret_key
    plain_sql("create function public.late_add(a integer, b integer) returns integer"
              " language sql immutable as $$ select a + b $$")
    missing = call(plain, key, "late_add", {"a": 1, "b": 2})
    assert missing.status_code == 404
    assert missing.json()["code"] == "PGRST202"
    assert missing.json()["message"] == "Could not find the function public.late_add(a, b) in the schema cache"
    loads = plain.schema_cache.loads
    plain_sql("notify pgrst, 'reload schema'")
    found = call(plain, key, "late_add", {"a": 1, "b": 2})
    assert (found.status_code, found.json()) == (200, 3)
    assert plain.schema_cache.loads == loads + 1


def test_an_empty_payload_reloads_and_other_payloads_do_not(plain, plain_sql, local_supabase):
    key = local_supabase.secret_key
    plain_sql("create function public.late_answer() returns integer language sql as $$ select 42 $$")
    loads = plain.schema_cache.loads
    plain_sql("notify pgrst, 'reload config'")
    plain_sql("notify pgrst, 'something else'")
    plain_sql("notify other_channel, 'reload schema'")
    assert call(plain, key, "late_answer").json()["code"] == "PGRST202"
    assert plain.schema_cache.loads == loads
    plain_sql("notify pgrst")
    assert call(plain, key, "late_answer").json() == 42
    assert plain.schema_cache.loads == loads + 1


def test_a_dropped_function_still_looks_present_and_fails_in_postgres_with_42883(plain, plain_sql, local_supabase):
    key = local_supabase.secret_key
    plain_sql("create function public.soon_gone(n integer) returns integer language sql as $$ select n $$")
    plain_sql("notify pgrst, 'reload schema'")
    assert call(plain, key, "soon_gone", {"n": 5}).json() == 5
    plain_sql("drop function public.soon_gone(integer)")
    stale = call(plain, key, "soon_gone", {"n": 5})
    assert stale.status_code == 404
    assert stale.headers["proxy-status"] == "PostgREST; error=42883"
    assert stale.json()["message"].startswith("function public.soon_gone(")
    assert stale.json()["message"].endswith("does not exist")
    plain_sql("notify pgrst, 'reload schema'")
    assert call(plain, key, "soon_gone", {"n": 5}).json()["code"] == "PGRST202"


def test_the_listener_comes_back_after_its_connection_is_lost_and_loads_again(plain, plain_sql, local_supabase):
    # Notifications sent while it was away are lost; reading the cache again makes up for them.
    key = local_supabase.secret_key
    loads = plain.schema_cache.loads
    plain_sql("select pg_terminate_backend(%s)", (plain.schema_cache.backend_pid,))
    plain_sql("create function public.while_away() returns text language sql as $$ select 'seen' $$")
    assert plain.schema_cache.wait_for_loads(loads + 1, timeout=30)
    assert call(plain, key, "while_away").json() == "seen"


def test_on_the_supabase_shaped_database_ddl_reloads_the_cache_by_itself(local_supabase):
    """Supabase's event triggers send the NOTIFY: a migration's function is callable without one."""
    project, key = local_supabase, local_supabase.secret_key
    with project.connect() as admin:
        triggers = admin.execute("select evtname, evtevent from pg_event_trigger order by 1").fetchall()
    assert ("pgrst_ddl_watch", "ddl_command_end") in triggers
    assert ("pgrst_drop_watch", "sql_drop") in triggers
    loads = project.gateway.schema_cache.loads
    with project.connect_as_owner() as owner:
        owner.execute("create function public.gw_cache_probe(n integer) returns integer"
                      " language sql immutable as $$ select n * 2 $$")
        try:
            assert call(project.gateway, key, "gw_cache_probe", {"n": 21}).json() == 42
            assert project.gateway.schema_cache.loads == loads + 1
        finally:
            owner.execute("drop function public.gw_cache_probe(integer)")
    assert call(project.gateway, key, "gw_cache_probe", {"n": 21}).json()["code"] == "PGRST202"
    assert project.gateway.schema_cache.loads == loads + 2


def test_temporary_objects_and_grants_do_not_reload(local_supabase):
    loads = local_supabase.gateway.schema_cache.loads
    with local_supabase.connect_as_owner() as owner:
        owner.execute("create temporary table gw_cache_scratch (id integer)")
        owner.execute("drop table gw_cache_scratch")
        owner.execute("grant execute on function public.storage_health() to service_role")
    assert local_supabase.gateway.schema_cache.catch_up()
    assert local_supabase.gateway.schema_cache.loads == loads


# -- role settings (PostgREST reads them with its config: at start and on 'reload config') --


@pytest.fixture
def reload_config(plain_sql):
    """Change role settings for the test, then put them back; the plain gateway re-reads them each time."""
    changed: list[tuple[str, str]] = []

    def alter(role: str, name: str, value: str) -> None:
        plain_sql(f"alter role {role} set {name} = '{value}'")
        changed.append((role, name))
        plain_sql("notify pgrst, 'reload config'")

    yield alter
    for role, name in changed:
        plain_sql(f"alter role {role} reset {name}")
    plain_sql("notify pgrst, 'reload config'")


def test_only_role_settings_the_login_may_set_itself_are_applied(plain, plain_sql, local_supabase, reload_config):
    plain_sql("create or replace function public.role_probe() returns json language sql as $$"
              " select json_build_object('timeout', current_setting('statement_timeout'),"
              " 'replication_role', current_setting('session_replication_role')) $$")
    plain_sql("notify pgrst, 'reload schema'")
    with pytest.raises(psycopg.errors.InsufficientPrivilege, match="permission denied to set parameter"), \
            psycopg.connect(plain.dsn, autocommit=True) as authenticator:
        authenticator.execute("select set_config('session_replication_role', 'replica', true)")
    reload_config("anon", "session_replication_role", "replica")
    seen = call(plain, local_supabase.anon_key, "role_probe")
    assert (seen.status_code, seen.json()) == (200, {"timeout": "3s", "replication_role": "origin"})


def test_isolation_levels_come_from_the_function_then_the_role(plain, plain_sql, local_supabase, reload_config):
    plain_sql("create or replace function public.iso_default() returns text language sql"
              " as $$ select current_setting('transaction_isolation') $$")
    plain_sql("create or replace function public.iso_serializable() returns text language sql"
              " set default_transaction_isolation = 'serializable'"
              " as $$ select current_setting('transaction_isolation') $$")
    plain_sql("notify pgrst, 'reload schema'")
    key, user = local_supabase.anon_key, make_key("authenticated", expires_in=600)
    assert call(plain, key, "iso_default", token=user).json() == "read committed"
    assert call(plain, key, "iso_serializable", token=user).json() == "serializable"
    reload_config("authenticated", "default_transaction_isolation", "repeatable read")
    assert call(plain, key, "iso_default", token=user).json() == "repeatable read"
    assert call(plain, key, "iso_serializable", token=user).json() == "serializable"
    assert call(plain, key, "iso_default").json() == "read committed", "anon has no level of its own"
