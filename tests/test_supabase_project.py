"""A project set up as Supabase sets one up: its API keys, its edge's failures, a fresh schema.

Everything goes through the real supabase-py client and the stand-in's edge,
on a database with Supabase's roles, grants, timeouts and pg_cron enabled.
"""

from __future__ import annotations

import json
import logging
import subprocess
import sys

import pytest

from tests.support.database import PROJECT_ROOT
from tests.support.environment import clean_environ
from tests.support.local_supabase import LocalSupabase
from tests.support.postgres_server import PASSWORD
from tests.test_supabase_storage import _row, _row_count
from utils.infrastructure.backends.supabase_storage import SupabaseStorage
from utils.infrastructure.contract.errors import (
    StoragePermissionError,
    StorageSchemaError,
    StorageUnavailableError,
)

SERVICE_KEYS = ["secret_key", "service_role_key"]


def _every_operation(storage: SupabaseStorage) -> dict[str, object]:
    """Each operation a daemon or an operator uses, once; what each returned."""
    storage.set_with_ttl("thread:a", 60, '{"turns": [1]}', user_id="alice", metadata={"tool": "chat"})
    storage.setex("thread:b", 60, '{"turns": []}')
    return {
        "health": storage.health()["role"],
        "get": json.loads(storage.get("thread:a")),
        "update": json.loads(storage.update("thread:b", lambda text: '{"turns": [2]}', 60)),
        "touch": storage.touch("thread:b", 120),
        "list": [t.key for t in storage.list_threads(user_id="alice")],
        "stats": storage.stats()["live"],
        "delete": storage.delete("thread:b"),
        "delete_user_threads": storage.delete_user_threads("alice"),
        "cleanup": storage.cleanup_expired(),
        "left": storage.get("thread:a"),
    }


EXPECTED = {
    "health": "service_role", "get": {"turns": [1]}, "update": {"turns": [2]}, "touch": True,
    "list": ["thread:a"], "stats": 2, "delete": True, "delete_user_threads": 1, "cleanup": 0, "left": None,
}


@pytest.mark.parametrize("key_name", SERVICE_KEYS)
def test_every_operation_works_with_a_service_key(supabase_project, key_name):
    with SupabaseStorage(supabase_project.url, getattr(supabase_project, key_name)) as storage:
        assert _every_operation(storage) == EXPECTED


@pytest.mark.parametrize(
    ("key_name", "kind"),
    [
        ("publishable_key", "publishable key (sb_publishable_...)"),
        ("anon_key", "legacy JWT key of role 'anon'"),
        ("authenticated_key", "legacy JWT key of role 'authenticated'"),
    ],
)
def test_keys_that_cannot_reach_the_threads_are_named_and_refused_before_any_request(supabase_project, key_name, kind):
    with pytest.raises(StoragePermissionError) as info:
        SupabaseStorage(supabase_project.url, getattr(supabase_project, key_name))
    assert kind in str(info.value)
    assert "sb_secret_" in str(info.value), "the error says what to use instead"
    assert supabase_project.gateway.request_count == 0


def test_a_key_the_project_does_not_know_is_refused_by_its_gateway_and_touches_nothing(supabase_project):
    with SupabaseStorage(supabase_project.url, supabase_project.secret_key) as storage:
        storage.setex("thread:kept", 60, '{"v": 1}')
    with SupabaseStorage(supabase_project.url, "sb_secret_not-a-key-of-this-project") as stranger:
        for operation in (stranger.health, lambda: stranger.setex("thread:kept", 60, '{"v": 2}'),
                          lambda: stranger.delete("thread:kept")):
            with pytest.raises(StoragePermissionError, match="Invalid API key"):
                operation()
    assert _row_count(supabase_project) == 1
    with SupabaseStorage(supabase_project.url, supabase_project.secret_key) as storage:
        assert json.loads(storage.get("thread:kept")) == {"v": 1}


def test_a_legacy_service_role_key_works_with_a_warning_to_move_on(supabase_project, caplog):
    with caplog.at_level(logging.WARNING), SupabaseStorage(supabase_project.url, supabase_project.service_role_key):
        pass
    assert "legacy service_role JWT key" in caplog.text
    assert "sb_secret_" in caplog.text
    caplog.clear()
    with caplog.at_level(logging.WARNING), SupabaseStorage(supabase_project.url, supabase_project.secret_key):
        pass
    assert caplog.text == ""


@pytest.mark.parametrize(
    ("fault", "seen"),
    [("502", "HTTP 502"), ("504", "HTTP 504"), ("520", "HTTP 520"), ("429", "HTTP 429"), ("408", "HTTP 408"),
     ("503", "code PGRST001")],
)
def test_edge_and_api_failures_are_unavailable_errors(supabase_project, fault, seen):
    with SupabaseStorage(supabase_project.url, supabase_project.secret_key) as storage:
        storage.setex("thread:x", 60, "{}")
        supabase_project.gateway.fault = fault
        try:
            for operation in (storage.health, lambda: storage.get("thread:x"),
                              lambda: storage.setex("thread:x", 60, "{}"), storage.stats):
                with pytest.raises(StorageUnavailableError, match=seen):
                    operation()
        finally:
            supabase_project.gateway.fault = None
        assert storage.get("thread:x") == "{}"


def test_a_fresh_project_set_up_from_the_sql_command_works_for_both_service_keys():
    """sql/ pasted into the SQL editor of a project with pg_cron enabled, as its owner `postgres`."""
    project = LocalSupabase(apply_schema=False)
    try:
        with SupabaseStorage(project.url, project.secret_key) as storage, \
                pytest.raises(StorageSchemaError, match="conversation-storage migrate"):
            storage.health()
        schema = subprocess.run(
            [sys.executable, "-m", "utils.infrastructure.operations.cli", "sql"], capture_output=True, text=True, check=True
        ).stdout
        with project.connect_as_owner() as owner:
            owner.execute(schema)
            jobs = owner.execute("select jobname from cron.job order by 1").fetchall()
        assert jobs == [("cleanup-expired-threads",), ("purge-cron-job-run-details",)]
        for key in (project.secret_key, project.service_role_key):
            with SupabaseStorage(project.url, key) as storage:
                assert _every_operation(storage) == EXPECTED
                report = storage.health()
                assert (report["pg_cron_installed"], report["cleanup_job_scheduled"]) == (True, True)
        assert _row(project, "thread:a") is None
    finally:
        project.close()


def test_the_async_client_names_keys_and_classifies_edge_failures_the_same_way(supabase_project):
    import asyncio

    from utils.infrastructure.backends.supabase_storage import AsyncSupabaseStorage

    async def scenario() -> None:
        with pytest.raises(StoragePermissionError, match="publishable key"):
            await AsyncSupabaseStorage.create(supabase_project.url, supabase_project.publishable_key)
        storage = await AsyncSupabaseStorage.create(supabase_project.url, supabase_project.secret_key)
        try:
            await storage.setex("thread:async", 60, "{}")
            supabase_project.gateway.fault = "504"
            with pytest.raises(StorageUnavailableError, match="HTTP 504"):
                await storage.get("thread:async")
            supabase_project.gateway.fault = None
            assert await storage.get("thread:async") == "{}"
        finally:
            supabase_project.gateway.fault = None
            await storage.close()

    asyncio.run(scenario())


def test_an_exhausted_api_pool_is_unavailable_and_failover_spools_through_it(supabase_project, tmp_path):
    """PostgREST's pool timeout (504 PGRST003): one connection, held by a write waiting on a row lock."""
    from tests.support.held_api import connection_held_on_a_row_lock, one_connection_api
    from utils.infrastructure.failover.failover_storage import DEGRADED, FailoverStorage
    from utils.infrastructure.failover.spool import Spool

    gateway = one_connection_api(supabase_project, pool_timeout=0.3).start()
    primary = SupabaseStorage(gateway.url, supabase_project.secret_key)
    try:
        primary.setex("thread:locked", 60, '{"v": 1}')
        with connection_held_on_a_row_lock(supabase_project, "thread:locked",
                                           lambda: primary.setex("thread:locked", 60, '{"v": 2}')):
            with pytest.raises(StorageUnavailableError, match="PGRST003"):
                primary.get("thread:locked")
            storage = FailoverStorage(primary, Spool(tmp_path / "spool.sqlite3"), first_probe_after=0.2)
            storage.setex("thread:spooled", 60, '{"during": "the pool timeout"}')
            assert storage.status()["state"] == DEGRADED
        assert storage.wait_until_healthy(30)
        assert json.loads(primary.get("thread:spooled")) == {"during": "the pool timeout"}
        assert json.loads(primary.get("thread:locked")) == {"v": 2}
        storage.close()
    finally:
        primary.close()
        gateway.stop()


def test_migrate_leaves_its_record_of_applied_files_to_the_owner_alone():
    """On Supabase the schema's default privileges give every new table to anon and authenticated."""
    from utils.infrastructure.operations.migrations import migrate

    project = LocalSupabase(apply_schema=False)
    try:
        migrate(project.server.dsn_for(project.dbname, user="postgres", password=PASSWORD))
        with project.connect() as conn:
            rights = conn.execute(
                "select r.rolname, p.privilege from unnest(array['anon', 'authenticated', 'service_role']) as r(rolname)"
                " cross join unnest(array['SELECT', 'INSERT', 'UPDATE', 'DELETE', 'TRUNCATE', 'REFERENCES',"
                "                         'TRIGGER']) as p(privilege)"
                " where has_table_privilege(r.rolname, 'public.conversation_storage_migrations', p.privilege)"
            ).fetchall()
            applied = conn.execute("select count(*) from public.conversation_storage_migrations").fetchone()[0]
    finally:
        project.close()
    assert rights == []
    assert applied == len(list((PROJECT_ROOT / "sql").glob("*/*.sql")))


def test_postgres_enables_pg_cron_itself_as_supautils_lets_it():
    """Not a superuser, ``postgres`` creates pg_cron; it belongs to supabase_admin with Supabase's grants."""
    import psycopg

    project = LocalSupabase(apply_schema=False, pg_cron_enabled=False)
    try:
        with project.connect_as_owner() as owner:
            superuser = "select rolsuper from pg_roles where rolname = 'postgres'"
            assert owner.execute(superuser).fetchone() == (False,)
            with owner.transaction(force_rollback=True):  # an attempt rolled back leaves postgres as it was
                owner.execute("create extension pg_cron")
            assert owner.execute(superuser).fetchone() == (False,)
            assert owner.execute("select count(*) from pg_extension where extname = 'pg_cron'").fetchone() == (0,)
            with pytest.raises(psycopg.errors.InsufficientPrivilege, match="permission denied to create extension"):
                owner.execute("create extension pageinspect")

            owner.execute("create extension if not exists pg_cron")
            owner.execute("create extension if not exists pg_cron")  # already enabled: a notice, no error
            assert owner.execute(superuser).fetchone() == (False,)
            assert owner.execute("select extowner::regrole::text, extnamespace::regnamespace::text from pg_extension"
                                 " where extname = 'pg_cron'").fetchone() == ("supabase_admin", "pg_catalog")
            job = owner.execute("select cron.schedule('probe', '0 * * * *', 'select 1')").fetchone()[0]
            assert owner.execute("select jobname from cron.job where jobid = %s", (job,)).fetchone() == ("probe",)
            with pytest.raises(psycopg.errors.InsufficientPrivilege):
                owner.execute("delete from cron.job")
        with project.connect() as admin, admin.transaction():
            admin.execute("set local role service_role")
            with pytest.raises(psycopg.errors.InsufficientPrivilege):
                admin.execute("select to_regclass('cron.job')")
    finally:
        project.close()


def _doctor_checks(project: LocalSupabase, tmp_path) -> dict[str, dict]:
    env = clean_environ()
    env.update({"CONVERSATION_STORAGE_BACKEND": "supabase", "SUPABASE_URL": project.url,
                "SUPABASE_KEY": project.secret_key, "CONVERSATION_SPOOL_PATH": str(tmp_path / "spool.sqlite3")})
    result = subprocess.run([sys.executable, "-m", "utils.infrastructure.operations.cli", "--json", "doctor"],
                            cwd=PROJECT_ROOT, env=env, capture_output=True, text=True, timeout=120, check=False)
    return {c["check"]: c for c in json.loads(result.stdout)["checks"]}


def test_migrate_leaves_pg_cron_to_the_owner_though_postgres_could_enable_it(tmp_path):
    """On a project that has not enabled pg_cron, migrate as ``postgres`` schedules nothing and enables nothing."""
    from utils.infrastructure.operations.migrations import migrate

    project = LocalSupabase(apply_schema=False, pg_cron_enabled=False)
    dsn = project.server.dsn_for(project.dbname, user="postgres", password=PASSWORD)
    enabled = "select count(*) from pg_extension where extname = 'pg_cron'"
    try:
        first = migrate(dsn)
        with project.connect_as_owner() as owner:
            enabled_by_migrate = owner.execute(enabled).fetchone()[0]
        before = _doctor_checks(project, tmp_path)["hourly cleanup"]

        with project.connect_as_owner() as owner:  # the owner enables it, as Database > Extensions does
            owner.execute("create extension pg_cron with schema pg_catalog")
        again = migrate(dsn)
        with project.connect_as_owner() as owner:
            jobs = owner.execute("select jobname from cron.job order by 1").fetchall()
        after = _doctor_checks(project, tmp_path)["hourly cleanup"]
    finally:
        project.close()
    assert "repeatable/90_cleanup_schedule.sql" in first
    assert enabled_by_migrate == 0
    assert (before["status"], before["detail"]) == (
        "WARN", "pg_cron is not enabled in this database: no job deletes expired threads")
    assert "Dashboard > Database > Extensions > pg_cron" in before["fix"]
    assert "as postgres `create extension pg_cron with schema pg_catalog`" in before["fix"]
    assert again == ["repeatable/90_cleanup_schedule.sql"]
    assert jobs == [("cleanup-expired-threads",), ("purge-cron-job-run-details",)]
    assert (after["status"], after["detail"]) == ("PASS", "pg_cron job cleanup-expired-threads is scheduled")
