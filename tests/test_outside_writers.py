"""Versions hold against what changes the database without the library.

An operator's UPDATE in Supabase's editors, and a backup restored as a copy
of the data directory: a daemon holding a thread in its near cache must read
what the store holds afterwards, and its next write must not be merged into
a document it never saw.
"""

from __future__ import annotations

import json
import shutil
import subprocess

import psycopg
import pytest

from tests.support.database import apply_sql
from tests.support.documents import conversation_document, next_turn
from tests.support.postgres_server import PASSWORD, PostgresServer
from utils.infrastructure.backends.postgres_storage import PostgresStorage
from utils.infrastructure.remote.near_cache import NearCache

TTL = 3600
VERSION = "select version from public.conversation_threads where thread_id = 'thread:o'"


@pytest.fixture
def sql(postgres_dsn):
    with psycopg.connect(postgres_dsn, autocommit=True) as conn:
        conn.execute("select public.thread_put('thread:o', '{\"turns\": [1]}', 60)")
        yield lambda query, *args: (conn.execute(query, args).fetchone() or [None])[0]


@pytest.mark.parametrize("edit", [
    "set conversation_data = jsonb_set(conversation_data, '{turns}', '[2]')",
    "set conversation_data = '{\"turns\": []}'",
    "set conversation_data = '{\"turns\": [2]}', version = version",
    "set conversation_data = '{\"turns\": [2]}', version = version + 1",
    "set version = 7",
])
def test_every_change_of_the_document_or_its_version_draws_a_new_version(sql, edit):
    before = sql(VERSION)
    sql(f"update public.conversation_threads {edit} where thread_id = 'thread:o' returning 1")
    after = sql(VERSION)
    assert after not in (before, before + 1, 7, 0)


@pytest.mark.parametrize("edit", [
    "set metadata = '{\"note\": 1}'",
    "set expires_at = expires_at + interval '1 hour'",
    "set conversation_data = conversation_data",  # the table editor saving a row it did not change
])
def test_an_edit_that_leaves_the_document_as_it_was_keeps_its_version(sql, edit):
    before = sql(VERSION)
    sql(f"update public.conversation_threads {edit} where thread_id = 'thread:o' returning 1")
    assert sql(VERSION) == before


def test_versions_come_from_a_random_source_a_restored_sequence_cannot_replay(sql):
    sql("select setval('public.conversation_thread_versions', 1000)")
    drawn = {sql("select (public.thread_put('thread:o', %s, 60))->>'version'", f'{{"n": {i}}}') for i in range(3)}
    sql("select setval('public.conversation_thread_versions', 1000)")
    sql("select setseed(0.5)")  # nor a session's seed
    again = {sql("select (public.thread_put('thread:o', %s, 60))->>'version'", f'{{"n": {i}}}') for i in range(3)}
    assert len(drawn | again) == 6


def test_an_operators_edit_is_what_a_daemon_holding_the_thread_reads_and_writes_on(postgres_dsn):
    with PostgresStorage(postgres_dsn, near_cache=NearCache(patch_min_chars=0)) as daemon, \
            psycopg.connect(postgres_dsn, autocommit=True) as editor:
        daemon.setex("thread:e", TTL, conversation_document(4))
        daemon.get("thread:e")  # now held as the store prints it
        editor.execute("update public.conversation_threads set conversation_data = "
                       "jsonb_set(conversation_data, '{reviewed}', 'true') where thread_id = 'thread:e'")
        edited = daemon.get("thread:e")
        assert json.loads(edited)["reviewed"] is True
        daemon.setex("thread:e", TTL, conversation_document(2, seed=5))  # held: sent as a patch
        editor.execute("update public.conversation_threads set conversation_data = "
                       "conversation_data - 'reviewed' where thread_id = 'thread:e'")
        written = next_turn(conversation_document(2, seed=5))
        daemon.setex("thread:e", TTL, written)  # a patch against the version before the edit: refused
        stored = editor.execute("select conversation_data from public.conversation_threads "
                                "where thread_id = 'thread:e'").fetchone()[0]
        assert stored == json.loads(written)


def _copy(server: PostgresServer, source, target) -> None:
    server.stop()
    shutil.rmtree(target, ignore_errors=True)
    # cp -a keeps the postgres user's ownership and modes, as a file-level backup tool does.
    subprocess.run(["cp", "-a", str(source), str(target)], check=True)
    server.start_process()


def test_a_restored_file_copy_never_serves_a_document_from_after_the_backup(tmp_path):
    with PostgresServer() as server:
        with server.connect() as conn:
            apply_sql(conn)
        dsn = server.dsn_for("postgres", password=PASSWORD)
        backup = server.root / "backup"
        with PostgresStorage(dsn, near_cache=True) as writer:
            writer.setex("thread:r", TTL, '{"turns": ["before the backup"]}')
        _copy(server, server.datadir, backup)
        with PostgresStorage(dsn, near_cache=True) as writer, PostgresStorage(dsn, near_cache=True) as reader:
            writer.setex("thread:r", TTL, '{"turns": ["after the backup"]}')
            assert json.loads(reader.get("thread:r"))["turns"] == ["after the backup"]  # held by the reader
            server.stop()
            shutil.rmtree(server.datadir)
            _copy(server, backup, server.datadir)
            with PostgresStorage(dsn, near_cache=False) as other:
                other.setex("thread:r", TTL, '{"turns": ["after the restore"]}')
            assert json.loads(reader.get("thread:r"))["turns"] == ["after the restore"]
