"""The migrate command: each file of sql/ once, in order, recorded."""

from __future__ import annotations

import hashlib
import shutil

import pytest

from tests.support.database import PROJECT_ROOT, SQL_DIR
from tests.support.postgres_server import PASSWORD
from utils.infrastructure.operations.migrations import MigrationError, migrate

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
    first = min(sql_dir.glob("*.sql"))
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


def test_a_database_that_ran_the_released_005_keeps_migrating(postgres_server, fresh_dsn, tmp_path):
    # 005 as released enabled pg_cron itself; it was edited since, and its
    # earlier checksum is accepted as the same migration.
    released = tmp_path / "sql-released"
    released.mkdir()
    for path in SQL_DIR.glob("*.sql"):
        if path.name < "006":
            shutil.copy(path, released)
    shutil.copy(PROJECT_ROOT / "tests" / "support" / "released_sql" / "005_cleanup_schedule.sql", released)
    assert migrate(fresh_dsn, directory=released) == ALL_FILES[:5]
    assert migrate(fresh_dsn) == ALL_FILES[5:]
    assert migrate(fresh_dsn) == []
    with postgres_server.connect(fresh_dsn.rsplit("/", 1)[1]) as conn:
        recorded = conn.execute("select checksum from public.conversation_storage_migrations"
                                " where filename = '005_cleanup_schedule.sql'").fetchone()[0]
    assert recorded == hashlib.sha256((released / "005_cleanup_schedule.sql").read_bytes()).hexdigest()

    edited = tmp_path / "sql-edited"
    shutil.copytree(SQL_DIR, edited)
    (edited / "005_cleanup_schedule.sql").write_text((released / "005_cleanup_schedule.sql").read_text() + "-- edited\n")
    with pytest.raises(MigrationError, match="005_cleanup_schedule.sql"):
        migrate(fresh_dsn, directory=edited)  # only the released text is accepted, no other edit


def test_accepted_earlier_texts_count_as_the_shipped_text():
    # Editing such a file again without a new entry would strand the databases that ran an earlier text.
    from utils.infrastructure.operations.migrations import _EARLIER_CHECKSUMS, sql_files

    shipped = {f.name: f.checksum for f in sql_files(SQL_DIR)}
    for name, earlier in _EARLIER_CHECKSUMS.items():
        assert set(earlier.values()) == {shipped[name]}, name
