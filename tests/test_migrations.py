"""The migrate command: each file of sql/ once, in order, recorded."""

from __future__ import annotations

import shutil

import pytest

from tests.support.database import SQL_DIR
from tests.support.postgres_server import PASSWORD
from utils.infrastructure.migrations import MigrationError, migrate

ALL_FILES = sorted(p.name for p in SQL_DIR.glob("*.sql"))


@pytest.fixture
def fresh_dsn(postgres_server, request):
    name = "migrate_" + request.node.name.replace("[", "_").replace("]", "")[:40]
    postgres_server.create_database(name)
    return postgres_server.dsn_for(name, password=PASSWORD)


def _recorded(postgres_server, dsn):
    with postgres_server.connect(dsn.rsplit("/", 1)[1]) as conn:
        return [r[0] for r in conn.execute("select filename from public.conversation_storage_migrations order by 1")]


def test_first_run_applies_every_file_in_order_and_the_second_nothing(postgres_server, fresh_dsn):
    assert migrate(fresh_dsn) == ALL_FILES
    assert _recorded(postgres_server, fresh_dsn) == ALL_FILES
    assert migrate(fresh_dsn) == []


def test_dry_run_lists_without_applying(postgres_server, fresh_dsn):
    assert migrate(fresh_dsn, dry_run=True) == ALL_FILES
    with postgres_server.connect(fresh_dsn.rsplit("/", 1)[1]) as conn:
        assert conn.execute("select to_regclass('public.conversation_threads')").fetchone()[0] is None


def test_a_new_file_is_applied_once(postgres_server, fresh_dsn, tmp_path):
    sql_dir = tmp_path / "sql"
    shutil.copytree(SQL_DIR, sql_dir)
    migrate(fresh_dsn, directory=sql_dir)
    (sql_dir / "999_extra.sql").write_text("create table public.extra_counter (n int); insert into public.extra_counter values (1);")
    assert migrate(fresh_dsn, directory=sql_dir) == ["999_extra.sql"]
    assert migrate(fresh_dsn, directory=sql_dir) == []
    with postgres_server.connect(fresh_dsn.rsplit("/", 1)[1]) as conn:
        assert conn.execute("select count(*) from public.extra_counter").fetchone()[0] == 1


def test_a_changed_applied_file_is_refused(fresh_dsn, tmp_path):
    sql_dir = tmp_path / "sql"
    shutil.copytree(SQL_DIR, sql_dir)
    migrate(fresh_dsn, directory=sql_dir)
    first = sorted(sql_dir.glob("*.sql"))[0]
    first.write_text(first.read_text() + "\n-- edited\n")
    with pytest.raises(MigrationError, match=first.name):
        migrate(fresh_dsn, directory=sql_dir)


def test_a_failing_file_keeps_nothing_of_itself(postgres_server, fresh_dsn, tmp_path):
    sql_dir = tmp_path / "sql"
    shutil.copytree(SQL_DIR, sql_dir)
    (sql_dir / "999_broken.sql").write_text("create table public.half_done (n int); select 1/0;")
    with pytest.raises(MigrationError, match="999_broken.sql"):
        migrate(fresh_dsn, directory=sql_dir)
    assert _recorded(postgres_server, fresh_dsn) == ALL_FILES
    with postgres_server.connect(fresh_dsn.rsplit("/", 1)[1]) as conn:
        assert conn.execute("select to_regclass('public.half_done')").fetchone()[0] is None


def test_a_database_set_up_by_hand_is_brought_under_migrate(postgres_server, fresh_dsn):
    from tests.support.database import apply_sql

    with postgres_server.connect(fresh_dsn.rsplit("/", 1)[1]) as conn:
        apply_sql(conn)  # e.g. pasted into Supabase's SQL editor
    assert migrate(fresh_dsn) == ALL_FILES  # idempotent files: re-applying is harmless
    assert migrate(fresh_dsn) == []
