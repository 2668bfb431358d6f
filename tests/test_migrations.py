"""The migrate command: versioned files once each, in order; repeatable files whenever they changed."""

from __future__ import annotations

import hashlib
import shutil

import pytest

from tests.support.database import SQL_DIR, apply_sql, legacy_sql_files
from tests.support.postgres_server import PASSWORD
from utils.infrastructure.operations.migrations import MigrationError, migrate, sql_files
from utils.infrastructure.remote.schema import SCHEMA_VERSION

ALL_FILES = [f.name for f in sql_files(SQL_DIR)]
VERSIONED = [name for name in ALL_FILES if name.startswith("versioned/")]
REPEATABLE = [name for name in ALL_FILES if name.startswith("repeatable/")]


@pytest.fixture
def fresh_dsn(postgres_server, request):
    name = "migrate_" + request.node.name.replace("[", "_").replace("]", "")[:40]
    postgres_server.create_database(name)
    return postgres_server.dsn_for(name, password=PASSWORD)


def _recorded(postgres_server, dsn):
    with postgres_server.connect(dsn.rsplit("/", 1)[1]) as conn:
        return [r[0] for r in conn.execute("select filename from public.conversation_storage_migrations order by 1")]


def test_files_are_applied_versioned_first_then_repeatable_each_in_order():
    assert VERSIONED and REPEATABLE
    assert ALL_FILES == sorted(VERSIONED) + sorted(REPEATABLE)


def test_first_run_applies_every_file_in_order_and_the_second_nothing(postgres_server, fresh_dsn):
    assert migrate(fresh_dsn) == ALL_FILES
    assert _recorded(postgres_server, fresh_dsn) == sorted(ALL_FILES)
    assert migrate(fresh_dsn) == []


def test_dry_run_lists_without_applying(postgres_server, fresh_dsn):
    assert migrate(fresh_dsn, dry_run=True) == ALL_FILES
    with postgres_server.connect(fresh_dsn.rsplit("/", 1)[1]) as conn:
        assert conn.execute("select to_regclass('public.conversation_threads')").fetchone()[0] is None


def test_a_new_versioned_file_is_applied_once_before_the_repeatables(postgres_server, fresh_dsn, tmp_path):
    sql_dir = tmp_path / "sql"
    shutil.copytree(SQL_DIR, sql_dir)
    migrate(fresh_dsn, directory=sql_dir)
    (sql_dir / "versioned" / "999_extra.sql").write_text(
        "create table public.extra_counter (n int); insert into public.extra_counter values (1);")
    assert migrate(fresh_dsn, directory=sql_dir) == ["versioned/999_extra.sql"]
    assert migrate(fresh_dsn, directory=sql_dir) == []
    with postgres_server.connect(fresh_dsn.rsplit("/", 1)[1]) as conn:
        assert conn.execute("select count(*) from public.extra_counter").fetchone()[0] == 1


def test_a_changed_applied_versioned_file_is_refused(postgres_server, fresh_dsn, tmp_path):
    sql_dir = tmp_path / "sql"
    shutil.copytree(SQL_DIR, sql_dir)
    migrate(fresh_dsn, directory=sql_dir)
    first = min((sql_dir / "versioned").glob("*.sql"))
    first.write_text(first.read_text() + "\n-- edited\n")
    (sql_dir / "repeatable" / "50_extra.sql").write_text("create table public.not_reached (n int);")
    with pytest.raises(MigrationError, match=f"versioned/{first.name}"):
        migrate(fresh_dsn, directory=sql_dir)
    with pytest.raises(MigrationError, match=f"versioned/{first.name}"):
        migrate(fresh_dsn, directory=sql_dir, dry_run=True)
    with postgres_server.connect(fresh_dsn.rsplit("/", 1)[1]) as conn:
        assert conn.execute("select to_regclass('public.not_reached')").fetchone()[0] is None


def test_a_changed_repeatable_file_is_applied_again_alone(postgres_server, fresh_dsn, tmp_path):
    sql_dir = tmp_path / "sql"
    shutil.copytree(SQL_DIR, sql_dir)
    migrate(fresh_dsn, directory=sql_dir)
    operator = sql_dir / "repeatable" / "40_operator_calls.sql"
    text = operator.read_text()
    assert f"$$ select {SCHEMA_VERSION} $$" in text
    operator.write_text(text.replace(f"$$ select {SCHEMA_VERSION} $$", f"$$ select {SCHEMA_VERSION + 1} $$"))
    assert migrate(fresh_dsn, directory=sql_dir, dry_run=True) == ["repeatable/40_operator_calls.sql"]
    assert migrate(fresh_dsn, directory=sql_dir) == ["repeatable/40_operator_calls.sql"]
    assert migrate(fresh_dsn, directory=sql_dir) == []
    with postgres_server.connect(fresh_dsn.rsplit("/", 1)[1]) as conn:
        assert conn.execute("select public.conversation_storage_schema_version()").fetchone()[0] == SCHEMA_VERSION + 1
        recorded = conn.execute("select checksum from public.conversation_storage_migrations"
                                " where filename = 'repeatable/40_operator_calls.sql'").fetchone()[0]
    assert recorded == hashlib.sha256(operator.read_bytes()).hexdigest()


def test_a_failing_file_keeps_nothing_of_itself(postgres_server, fresh_dsn, tmp_path):
    sql_dir = tmp_path / "sql"
    shutil.copytree(SQL_DIR, sql_dir)
    (sql_dir / "repeatable" / "99_broken.sql").write_text("create table public.half_done (n int); select 1/0;")
    with pytest.raises(MigrationError, match="repeatable/99_broken.sql"):
        migrate(fresh_dsn, directory=sql_dir)
    assert _recorded(postgres_server, fresh_dsn) == sorted(ALL_FILES)
    with postgres_server.connect(fresh_dsn.rsplit("/", 1)[1]) as conn:
        assert conn.execute("select to_regclass('public.half_done')").fetchone()[0] is None
    with pytest.raises(MigrationError, match="repeatable/99_broken.sql"):
        migrate(fresh_dsn, directory=sql_dir)  # tried again on the next run, alone


def test_a_database_set_up_by_hand_is_brought_under_migrate(postgres_server, fresh_dsn):
    with postgres_server.connect(fresh_dsn.rsplit("/", 1)[1]) as conn:
        apply_sql(conn)  # e.g. pasted into Supabase's SQL editor
    assert migrate(fresh_dsn) == ALL_FILES  # idempotent files: re-applying is harmless
    assert migrate(fresh_dsn) == []


def test_a_database_migrated_with_the_pre_release_files_keeps_their_records(postgres_server, fresh_dsn):
    legacy = legacy_sql_files()
    with postgres_server.connect(fresh_dsn.rsplit("/", 1)[1]) as conn:
        conn.execute("create table public.conversation_storage_migrations (filename text primary key,"
                     " checksum text not null, applied_at timestamptz not null default now())")
        apply_sql(conn, legacy)
        for path in legacy:
            conn.execute("insert into public.conversation_storage_migrations (filename, checksum) values (%s, %s)",
                         (path.name, hashlib.sha256(path.read_bytes()).hexdigest()))
    assert migrate(fresh_dsn) == ALL_FILES
    assert migrate(fresh_dsn) == []
    assert _recorded(postgres_server, fresh_dsn) == sorted([p.name for p in legacy] + ALL_FILES)
