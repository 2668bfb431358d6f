"""What a cleanup sweep records (sql/versioned/003_cleanup_sweeps.sql) and how replays read it."""

from __future__ import annotations

from datetime import timedelta

import psycopg
import pytest

from tests.support.rows import thread_row


@pytest.fixture
def conn(postgres_dsn):
    with psycopg.connect(postgres_dsn, autocommit=True) as conn:
        yield conn


def _expired_row(conn, key: str, written_ago: timedelta) -> None:
    """A thread last written ``written_ago`` whose lifetime is over, as an operator's restore might leave it."""
    conn.execute("insert into public.conversation_threads (thread_id, conversation_data, updated_at, expires_at)"
                 " values (%s, '{\"v\": \"newer\"}', now() - %s, now() - interval '1 second')", (key, written_ago))


def _sweep(conn) -> int:
    return conn.execute("select public.cleanup_expired_threads(1000)").fetchone()[0]


def _replay_set(conn, key: str, written_ago: timedelta) -> str:
    return conn.execute("select public.thread_replay(%s, 'set', now() - %s, '{\"v\": \"spooled\"}', 86400)",
                        (key, written_ago)).fetchone()[0]


def test_a_sweep_records_every_key_with_its_last_write_in_one_row(conn):
    for i in range(3):
        _expired_row(conn, f"thread:swept-{i}", timedelta(hours=i + 1))
    assert _sweep(conn) == 3
    rows = conn.execute("select u.thread_id, now() - u.written_at, s.newest_written_at = max(u.written_at) over ()"
                        " from public.conversation_thread_sweeps s,"
                        " unnest(s.thread_ids, s.written_ats) u(thread_id, written_at) order by 1").fetchall()
    assert [(key, round(ago / timedelta(hours=1)), newest) for key, ago, newest in rows] == [
        ("thread:swept-0", 1, True), ("thread:swept-1", 2, True), ("thread:swept-2", 3, True)]
    assert conn.execute("select count(*) from public.conversation_thread_tombstones").fetchone() == (0,)


def test_a_large_batch_is_recorded_in_rows_of_at_most_1000_keys(conn):
    # An operator's one-off call with a huge batch must not build one giant array.
    conn.execute("insert into public.conversation_threads (thread_id, conversation_data, updated_at, expires_at)"
                 " select 'thread:bulk-' || i, '{}', now() - interval '1 hour', now() - interval '1 second'"
                 " from generate_series(1, 2500) i")
    assert conn.execute("select public.cleanup_expired_threads(1000000)").fetchone() == (2500,)
    sizes = conn.execute("select cardinality(thread_ids) from public.conversation_thread_sweeps order by 1").fetchall()
    assert sizes == [(500,), (1000,), (1000,)]
    assert conn.execute("select count(distinct k) from public.conversation_thread_sweeps, unnest(thread_ids) k"
                        ).fetchone() == (2500,)


def test_a_replay_older_than_the_swept_write_is_superseded_and_a_newer_one_applies(conn):
    _expired_row(conn, "thread:a", timedelta(hours=2))
    _expired_row(conn, "thread:b", timedelta(hours=2))
    _sweep(conn)
    assert _replay_set(conn, "thread:a", timedelta(hours=3)) == "superseded"
    assert thread_row(conn, "thread:a") is None
    assert _replay_set(conn, "thread:b", timedelta(hours=1)) == "applied"
    assert thread_row(conn, "thread:b") == {"v": "spooled"}


def test_each_key_of_a_sweep_is_judged_by_its_own_write_not_the_sweeps_newest(conn):
    # The sweep's newest write (thread:late's) is newer than the replay; thread:early's own is older.
    _expired_row(conn, "thread:early", timedelta(hours=5))
    _expired_row(conn, "thread:late", timedelta(hours=1))
    _sweep(conn)
    assert _replay_set(conn, "thread:early", timedelta(hours=3)) == "applied"
    assert _replay_set(conn, "thread:late", timedelta(hours=3)) == "superseded"
    assert _replay_set(conn, "thread:never-swept", timedelta(hours=3)) == "applied"


def test_a_key_swept_twice_is_judged_by_its_newest_write(conn):
    _expired_row(conn, "thread:twice", timedelta(hours=4))
    _sweep(conn)
    _expired_row(conn, "thread:twice", timedelta(hours=1))
    _sweep(conn)
    assert conn.execute("select count(*) from public.conversation_thread_sweeps").fetchone() == (2,)
    assert _replay_set(conn, "thread:twice", timedelta(hours=2)) == "superseded"


def test_rows_written_before_the_retention_leave_no_record_and_old_sweeps_are_purged(conn):
    conn.execute("insert into public.conversation_thread_sweeps (newest_written_at, thread_ids, written_ats)"
                 " values (now() - interval '31 days', array['thread:old-a', 'thread:old-b'],"
                 "         array[now() - interval '32 days', now() - interval '31 days'])")
    _expired_row(conn, "thread:ancient", timedelta(days=31))
    assert _sweep(conn) == 1 + 2, "one row removed, a sweep of two keys purged"
    assert conn.execute("select count(*) from public.conversation_thread_sweeps").fetchone() == (0,)
    assert _replay_set(conn, "thread:ancient", timedelta(days=31)) == "too_old"


def test_tombstones_that_earlier_sweeps_wrote_still_supersede(conn):
    # Databases before schema version 12 recorded each swept key as a tombstone.
    conn.execute("insert into public.conversation_thread_tombstones (thread_id, written_at)"
                 " values ('thread:buried', now() - interval '1 hour')")
    assert _replay_set(conn, "thread:buried", timedelta(hours=2)) == "superseded"
    assert _replay_set(conn, "thread:buried", timedelta(minutes=30)) == "applied"
