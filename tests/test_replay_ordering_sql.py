"""thread_replay against writers that commit while it runs (sql/013), forced with real locks.

Each test parks a replay on a lock another session holds, lets a second
writer commit meanwhile, then releases it: the newer write must survive.
"""

from __future__ import annotations

import threading
from datetime import timedelta

import psycopg
import pytest

from tests.support.rows import thread_row
from tests.support.waiting import wait_until


def _replay(dsn, *args) -> tuple[threading.Thread, dict, int]:
    """Start thread_replay(*args) on a connection of its own; return the thread, its answer and its backend pid."""
    conn = psycopg.connect(dsn, autocommit=True)
    answer: dict = {}

    def run() -> None:
        with conn:
            answer["value"] = conn.execute(
                "select public.thread_replay(%s, %s, %s, %s, %s, %s)", args).fetchone()[0]

    worker = threading.Thread(target=run, daemon=True)
    pid = conn.info.backend_pid
    worker.start()
    return worker, answer, pid


def _wait_until_blocked(conn, pid: int) -> None:
    wait_until(lambda: conn.execute("select wait_event_type from pg_stat_activity where pid = %s",
                                    (pid,)).fetchone()[0] == "Lock", "the replay to reach the lock", timeout=30)


@pytest.mark.parametrize("op", ["delete", "expired set"])
def test_an_older_replay_never_removes_a_row_written_after_its_lookup(postgres_dsn, op):
    key = f"thread:race-{op.replace(' ', '-')}"
    with psycopg.connect(postgres_dsn, autocommit=True) as blocker, \
            psycopg.connect(postgres_dsn, autocommit=True) as writer:
        now = blocker.execute("select now()").fetchone()[0]
        # A delete acknowledged a second ago, or a 1 s set acknowledged 5 s ago (expired before its replay).
        args = ((key, "delete", now - timedelta(seconds=1), None, None, None) if op == "delete"
                else (key, "set", now - timedelta(seconds=5), '{"v": "old"}', 1, None))
        with blocker.transaction():
            # The replay finds no row, then waits here, between its lookup and its change.
            blocker.execute("lock table public.conversation_thread_tombstones in access exclusive mode")
            worker, answer, pid = _replay(postgres_dsn, *args)
            _wait_until_blocked(blocker, pid)
            writer.execute("select public.thread_put(%s, %s, 3600)", (key, '{"v": "newer, direct"}'))
        worker.join(30)
        assert thread_row(writer, key, "conversation_data", "user_id") == ({"v": "newer, direct"}, None)
    assert answer["value"] == "superseded"


def test_an_erase_waits_for_a_replay_of_the_users_write_and_then_removes_it(postgres_dsn):
    key, user = "thread:erase-race", "user-erase-race"
    with psycopg.connect(postgres_dsn, autocommit=True) as blocker, \
            psycopg.connect(postgres_dsn, autocommit=True) as eraser:
        written_at = blocker.execute("select now() - interval '1 second'").fetchone()[0]
        with blocker.transaction():
            blocker.execute("lock table public.conversation_thread_tombstones in access exclusive mode")
            worker, answer, pid = _replay(postgres_dsn, key, "set", written_at, '{"v": 1}', 3600, user)
            _wait_until_blocked(blocker, pid)
            erased: dict = {}
            erase = threading.Thread(target=lambda: erased.update(n=eraser.execute(
                "select public.delete_user_threads_batch(%s, 100)", (user,)).fetchone()[0]), daemon=True)
            erase.start()
            _wait_until_blocked(blocker, eraser.info.backend_pid)  # on the user's lock, held by the replay
        worker.join(30)
        erase.join(30)
        assert answer["value"] == "applied"
        assert erased["n"] == 1, "the erase ran after the replay and removed what it wrote"
        assert thread_row(blocker, key, "conversation_data", "user_id") is None
