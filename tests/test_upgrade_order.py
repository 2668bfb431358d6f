"""Upgrades in either order: the library before `migrate`, or `migrate` before the library.

"Before" and "after" are real: the previous schema is sql/ as an earlier
commit of this repository shipped it, and the previous library is that
commit's utils/infrastructure/, run in a process of its own.
"""

from __future__ import annotations

import asyncio
import json
import logging
import subprocess
import sys
import uuid
from pathlib import Path

import psycopg
import pytest

from tests.support.database import PROJECT_ROOT, apply_sql, legacy_sql_files, sql_files
from tests.support.history import sql_files_at
from tests.support.local_supabase import LocalSupabase
from tests.support.postgres_server import PASSWORD
from utils.infrastructure.backends.postgres_storage import AsyncPostgresStorage
from utils.infrastructure.backends.supabase_storage import SupabaseStorage
from utils.infrastructure.failover.failover_storage import FailoverStorage
from utils.infrastructure.operations.backend_factory import create_storage
from utils.infrastructure.operations.settings import load_settings
from utils.infrastructure.remote.near_cache import NearCache
from utils.infrastructure.remote.schema import SCHEMA_VERSION

#: The last commit at schema version 9, before sql/015 made versions random.
PREVIOUS = "c6e9a80"
TTL = 3600


@pytest.fixture
def database(postgres_server):
    """A fresh database with the given sql files applied; returns its DSN."""
    def create(files: list[Path]) -> str:
        name = postgres_server.create_database(f"upgrade_{uuid.uuid4().hex[:12]}")
        with postgres_server.connect(name) as conn:
            apply_sql(conn, files)
        return postgres_server.dsn_for(name, password=PASSWORD)
    return create


def _daemon(dsn: str, tmp_path: Path):
    # The near cache asked for, as a daemon reaching a server elsewhere has it.
    return create_storage(load_settings({
        "CONVERSATION_STORAGE_BACKEND": "postgres", "DATABASE_URL": dsn,
        "CONVERSATION_SPOOL_PATH": str(tmp_path / "spool.sqlite3"), "CONVERSATION_NEAR_CACHE": "true",
    }))


def _pal_exchange(storage) -> dict:
    """What pal does with a thread, and what an operator does; what came back."""
    storage.setex("thread:u", TTL, '{"turns": [1]}')
    storage.setex("thread:u", TTL, '{"turns": [1, 2]}')  # a second write: a patch where the cache is on
    first = storage.get("thread:u")
    again = storage.get("thread:u")
    updated = storage.update("thread:u", lambda text: '{"turns": [1, 2, 3]}', TTL)
    return {"first": first, "again": again, "updated": updated, "deleted": storage.delete("thread:u"),
            "gone": storage.get("thread:u"), "stats": storage.stats()["live"]}


EXCHANGED = {"first": '{"turns": [1, 2]}', "again": '{"turns": [1, 2]}', "updated": '{"turns": [1, 2, 3]}',
             "deleted": True, "gone": None, "stats": 0}


def test_todays_library_keeps_storing_on_the_previous_schema(database, tmp_path, caplog):
    dsn = database(list(sql_files_at(PREVIOUS)))
    with caplog.at_level(logging.WARNING, logger="conversation_storage"):
        storage = _daemon(dsn, tmp_path)
    try:
        assert isinstance(storage, FailoverStorage)  # the store, not memory
        assert storage.primary.near_cache is None
        assert "schema version 9" in caplog.text and "conversation-storage migrate" in caplog.text
        assert _pal_exchange(storage) == EXCHANGED
    finally:
        storage.close()


def test_on_schema_version_7_every_operation_finds_a_function(database, tmp_path, caplog):
    # The pre-release files up to 010: thread_put, thread_fetch and thread_patch do not exist yet.
    dsn = database(legacy_sql_files("011"))
    with caplog.at_level(logging.WARNING, logger="conversation_storage"):
        storage = _daemon(dsn, tmp_path)
    try:
        assert isinstance(storage, FailoverStorage)
        assert _pal_exchange(storage) == EXCHANGED
        storage.set_with_ttl("thread:v", TTL, '{"a": 1}', user_id="ann")
        assert [t.key for t in storage.list_threads(user_id="ann")] == ["thread:v"]
        assert storage.touch("thread:v", TTL)
        assert storage.delete_user_threads("ann") == 1
        assert storage.cleanup_expired() == 0
        assert "conversation-storage migrate" in caplog.text
    finally:
        storage.close()


def test_a_function_missing_at_call_time_turns_the_near_cache_off_and_writes_on(database, tmp_path, caplog):
    # What a daemon meets when migrate runs while it is up (or PostgREST has
    # not reloaded): it opened on today's schema, then the newer functions went.
    dsn = database(sql_files())
    storage = _daemon(dsn, tmp_path)
    try:
        storage.setex("thread:m", TTL, '{"turns": [1]}')
        assert storage.primary.near_cache is not None
        with psycopg.connect(dsn, autocommit=True) as conn:
            conn.execute("drop function public.thread_patch(text, bigint, text, integer, integer, text, jsonb, timestamptz)")
            conn.execute("drop function public.thread_put(text, text, integer, text, jsonb, timestamptz)")
            conn.execute("drop function public.thread_fetch(text, bigint, text)")
        with caplog.at_level(logging.WARNING, logger="conversation_storage"):
            storage.setex("thread:m", TTL, '{"turns": [1, 2]}')
            assert storage.get("thread:m") == '{"turns": [1, 2]}'
        assert storage.primary.near_cache is None
        assert _warnings_naming_migrate(caplog) == 1
    finally:
        storage.close()


_PREVIOUS_LIBRARY_RUN = """
import json, sys
import psycopg
from utils.infrastructure.postgres_storage import PostgresStorage
from utils.infrastructure.near_cache import NearCache
dsn = sys.argv[1]
with PostgresStorage(dsn, near_cache=NearCache(patch_min_chars=0)) as daemon, \\
        psycopg.connect(dsn, autocommit=True) as editor:
    daemon.setex("thread:p", 3600, '{"turns": [1]}')
    daemon.setex("thread:p", 3600, '{"turns": [1, 2]}')
    held = daemon.get("thread:p")
    editor.execute("update public.conversation_threads set conversation_data = "
                   "jsonb_set(conversation_data, '{edited}', 'true') where thread_id = 'thread:p'")
    edited = daemon.get("thread:p")
    daemon.setex("thread:p", 3600, '{"turns": [1, 2, 3]}')
    print(json.dumps({"held": held, "edited": edited, "health": daemon.health()["schema_version"],
                      "stored": daemon.get("thread:p")}))
"""


def test_the_previous_library_runs_on_todays_schema(database, tmp_path):
    dsn = database(sql_files())
    library = tmp_path / "previous"
    library.mkdir()
    archive = subprocess.run(["git", "-C", str(PROJECT_ROOT), "archive", PREVIOUS, "utils"],
                             capture_output=True, check=True).stdout
    subprocess.run(["tar", "-x", "-C", str(library)], input=archive, check=True)
    run = subprocess.run([sys.executable, "-c", _PREVIOUS_LIBRARY_RUN, dsn], check=False, cwd=library,
                         capture_output=True, text=True, env={"PYTHONPATH": str(library), "PATH": "/usr/bin:/bin"})
    assert run.returncode == 0, run.stderr
    seen = json.loads(run.stdout)
    assert seen["health"] == SCHEMA_VERSION
    assert seen["held"] == '{"turns": [1, 2]}'
    assert json.loads(seen["edited"]) == {"turns": [1, 2], "edited": True}  # its near cache follows the edit
    assert seen["stored"] == '{"turns": [1, 2, 3]}'  # its patch was refused, not merged into the edit


def test_functions_newer_than_postgrests_schema_cache_are_not_needed(caplog):
    # A PostgREST of one's own: no event trigger reloads its cache after DDL.
    project = LocalSupabase(apply_schema=False)
    try:
        with project.connect() as admin:
            admin.execute("alter event trigger pgrst_ddl_watch disable")
            admin.execute("alter event trigger pgrst_drop_watch disable")
        with project.connect_as_owner() as owner:
            apply_sql(owner, legacy_sql_files("011"))
            owner.execute("notify pgrst, 'reload schema'")  # the schema version 7 the daemons ran on
        with project.connect_as_owner() as owner:
            apply_sql(owner)  # migrate to today's layout, no reload
        with SupabaseStorage(project.url, project.secret_key, near_cache=True) as storage:
            assert storage.health()["schema_version"] == SCHEMA_VERSION
            with caplog.at_level(logging.WARNING, logger="conversation_storage"):
                assert _pal_exchange(storage) == EXCHANGED
            assert storage.near_cache is None
            assert "thread_put() is missing" in caplog.text and "PGRST202" in caplog.text
        with project.connect() as admin:
            admin.execute("notify pgrst, 'reload schema'")
        with SupabaseStorage(project.url, project.secret_key, near_cache=True) as storage:
            assert _pal_exchange(storage) == EXCHANGED
            assert storage.near_cache is not None
    finally:
        project.close()


def test_the_asyncio_face_falls_back_the_same_way(database, caplog):
    dsn = database(legacy_sql_files("011"))

    async def exchange() -> tuple:
        storage = await AsyncPostgresStorage.create(dsn, near_cache=NearCache(patch_min_chars=0))
        try:
            await storage.setex("thread:a", TTL, '{"turns": [1]}')
            await storage.setex("thread:a", TTL, '{"turns": [1, 2]}')
            return await storage.get("thread:a"), await storage.get("thread:a"), storage.near_cache
        finally:
            await storage.close()

    with caplog.at_level(logging.WARNING, logger="conversation_storage"):
        first, again, cache = asyncio.run(exchange())
    assert first == again == '{"turns": [1, 2]}'
    assert cache is None and _warnings_naming_migrate(caplog) == 1


def _warnings_naming_migrate(caplog) -> int:
    # Records, not mentions: the warning quotes the schema error, which names migrate too.
    return sum("conversation-storage migrate" in r.getMessage() for r in caplog.records if r.levelno == logging.WARNING)
