"""A replay never undoes an acknowledged change: deletes, erasures and expiries win over older spooled writes.

Each test takes a real store away (Postgres stopped with ``-m immediate``, or
Supabase's API answering 503), lets a daemon spool, brings the store back and
checks the rows themselves.
"""

from __future__ import annotations

import json
import time
import uuid

import pytest

from tests.support.outages import HeldProbes
from tests.support.rows import has_lapsed, thread_row
from tests.support.waiting import wait_until
from utils.infrastructure.failover.failover_storage import DEGRADED, HEALTHY, REPLAYING, FailoverStorage
from utils.infrastructure.failover.spool import Spool


def _failover(store, tmp_path, *, first_probe_after: float = 0.2, spool_path=None) -> FailoverStorage:
    spool = Spool(spool_path or tmp_path / "spool.sqlite3")
    return FailoverStorage(store.client(), spool, first_probe_after=first_probe_after, max_probe_interval=1.0)


def _key(name: str) -> str:
    return f"thread:{name}-{uuid.uuid4().hex[:8]}"


@pytest.mark.parametrize("victim_position", ["first", "last"])
def test_a_delete_made_while_replaying_stays_deleted(store, tmp_path, victim_position):
    victim, fillers = _key("victim"), [_key(f"filler{i}") for i in range(400)]
    with _failover(store, tmp_path) as storage:
        store.down()
        writes = [victim, *fillers] if victim_position == "first" else [*fillers, victim]
        for key in writes:
            storage.setex(key, 3600, json.dumps({"key": key}))
        assert storage.status()["state"] == DEGRADED
        store.up()
        # Polled often: the replay of 400 writes is the window the delete must fall into.
        wait_until(lambda: storage.status()["state"] == REPLAYING, "the replay to start", interval=0.001)
        pending_then = storage.status()["pending"]
        assert storage.delete(victim) is True, "the spooled value was live"
        assert storage.wait_until_healthy(60), storage.status()
        assert storage.get(victim) is None
    assert pending_then > 0, "the delete was made while the replay ran"
    assert thread_row(store, victim) is None
    assert thread_row(store, fillers[-1]) == {"key": fillers[-1]}


def test_a_delete_by_another_daemon_after_recovery_is_not_undone(store, tmp_path):
    key = _key("deleted-elsewhere")
    with _failover(store, tmp_path) as daemon_a, HeldProbes(daemon_a) as probes:
        store.down()
        daemon_a.setex(key, 3600, '{"v": "spooled by A"}')
        assert daemon_a.status()["state"] == DEGRADED
        store.up()
        with store.client() as daemon_b:
            assert daemon_b.delete(key) is False  # A's write has not reached the store yet
            assert daemon_a.status()["state"] == DEGRADED, "A replays only after B's delete"
            probes.release()
            assert daemon_a.wait_until_healthy(30)
            assert daemon_b.get(key) is None
        assert daemon_a.status()["replayed"]["superseded"] == 1
    assert thread_row(store, key) is None


def test_a_newer_value_that_expired_and_was_cleaned_up_is_not_replaced_by_an_older_one(store, tmp_path):
    key = _key("expired-elsewhere")
    with _failover(store, tmp_path) as daemon_a, HeldProbes(daemon_a) as probes:
        store.down()
        daemon_a.setex(key, 3600, '{"v": "spooled by A"}')
        store.up()
        with store.client() as daemon_b:
            daemon_b.setex(key, 1, '{"v": "newer, short-lived"}')
            wait_until(lambda: has_lapsed(store, key), "B's short-lived write to expire on the server's clock")
            assert daemon_b.cleanup_expired() >= 1
            probes.release()
            assert daemon_a.wait_until_healthy(30)
            assert daemon_b.get(key) is None
    assert thread_row(store, key) is None


def test_a_user_erased_after_an_outage_stays_erased(store, tmp_path):
    key, user = _key("erased"), f"user-{uuid.uuid4().hex[:8]}"
    with _failover(store, tmp_path) as daemon_a, HeldProbes(daemon_a) as probes:
        store.down()
        daemon_a.set_with_ttl(key, 3600, '{"v": "spooled by A"}', user_id=user)
        store.up()
        with store.client() as daemon_b:
            assert daemon_b.delete_user_threads(user) == 0  # the store has none of theirs yet
            probes.release()
            assert daemon_a.wait_until_healthy(30)
    assert thread_row(store, key) is None


def test_a_spooled_write_that_expired_during_the_outage_still_replaces_the_older_value(store, tmp_path):
    key = _key("short-lived")
    with _failover(store, tmp_path) as storage:
        storage.setex(key, 3600, '{"v": "old"}')
        store.down()
        storage.setex(key, 2, '{"v": "new, short-lived"}')
        assert storage.status()["state"] == DEGRADED
        # Until the daemon's reading of the store's clock (the one it stamped the write with) is past its TTL.
        spooled = storage.spool.latest(key)
        wait_until(lambda: storage.clock.now() >= spooled.written_at + spooled.ttl,
                   "the spooled write's TTL to lapse on the daemon's reading of the store's clock")
        assert storage.get(key) is None, "expired in the spool too"
        store.up()
        assert storage.wait_until_healthy(30)
        assert storage.get(key) is None
        assert storage.status()["replayed"]["expired"] == 1
    assert thread_row(store, key) is None


def test_a_spooled_write_older_than_a_direct_one_is_not_replayed_over_it(store, tmp_path):
    key = _key("rewritten")
    with _failover(store, tmp_path) as daemon_a, HeldProbes(daemon_a) as probes:
        store.down()
        daemon_a.setex(key, 3600, '{"v": "spooled by A"}')
        store.up()
        with store.client() as daemon_b:
            daemon_b.setex(key, 3600, '{"v": "newer, by B"}')
            probes.release()
            assert daemon_a.wait_until_healthy(30)
            assert json.loads(daemon_b.get(key)) == {"v": "newer, by B"}


def test_a_daemon_whose_clock_is_wrong_still_orders_its_spooled_writes(store, tmp_path, monkeypatch):
    # Daemon A's clock runs an hour behind. Stamped with its own clock, its
    # spooled write would lose to B's older delete... and with a clock an
    # hour ahead it would beat every later write. A measures the server's
    # clock on its answers and stamps spooled writes with that instead.
    import types

    from utils.infrastructure.failover import failover_storage, server_clock

    key = _key("skewed")
    late = types.SimpleNamespace(**{**vars(time), "time": lambda: time.time() - 3600})
    with _failover(store, tmp_path) as daemon_a:
        # The daemon's clock, as the library reads it (the store and its API keep the real one).
        monkeypatch.setattr(failover_storage, "time", late)
        monkeypatch.setattr(server_clock, "time", late)
        daemon_a.setex(_key("measure"), 60, "{}")  # any answer measures the offset
        with store.client() as daemon_b:
            daemon_b.setex(key, 3600, '{"v": "by B, before the outage"}')
            daemon_b.delete(key)
        store.down()
        daemon_a.setex(key, 3600, '{"v": "spooled by A after the delete"}')
        store.up()
        assert daemon_a.wait_until_healthy(30)
        assert abs(daemon_a.status()["server_clock_offset_seconds"] - 3600) < 5
    assert thread_row(store, key) == {"v": "spooled by A after the delete"}


def test_replaying_the_same_write_twice_changes_nothing(store, tmp_path):
    from utils.infrastructure.failover.spool import SpooledWrite

    key = _key("twice")
    with store.client() as client:
        server_now = client.health()["server_time"]
        from datetime import datetime

        written_at = datetime.fromisoformat(server_now).timestamp() - 1
        write = SpooledWrite(1, key, "set", '{"v": 1}', 3600, None, None, written_at)
        assert client.replay(write) == "applied"
        assert client.replay(write) == "superseded"
        assert client.replay(SpooledWrite(2, key, "delete", None, None, None, None, written_at + 0.5)) == "applied"
        assert client.replay(write) == "superseded", "the delete's tombstone is newer"
        old = SpooledWrite(3, key, "set", '{"v": 0}', 3600 * 24 * 365, None, None, written_at - 31 * 86400)
        assert client.replay(old) == "too_old"
    assert thread_row(store, key) is None


def test_writes_spooled_long_ago_are_set_aside_not_replayed(store, tmp_path, caplog):
    key = _key("ancient")
    spool = Spool(tmp_path / "spool.sqlite3")
    spool.append_set(key, 3600 * 24 * 365, '{"v": "a year long"}', None, None, time.time() - 40 * 86400)
    with caplog.at_level("ERROR"), FailoverStorage(store.client(), spool, first_probe_after=0.1) as storage:
        assert storage.wait_until_healthy(30)
    assert "older than the store's tombstone retention" in caplog.text
    assert thread_row(store, key) is None
    import sqlite3

    with sqlite3.connect(tmp_path / "spool.sqlite3") as conn:
        assert conn.execute("select key from set_aside_writes").fetchall() == [(key,)]


def test_status_is_healthy_after_the_last_replay(store, tmp_path):
    with _failover(store, tmp_path) as storage:
        store.down()
        storage.setex(_key("one"), 60, "{}")
        store.up()
        assert storage.wait_until_healthy(30)
        assert storage.status()["state"] == HEALTHY
        assert storage.status()["pending"] == 0


def test_a_write_the_api_runs_after_the_client_gave_up_does_not_override_later_writes(supabase_project, tmp_path):
    # PostgREST queues a request until a database connection is free, and
    # runs it even if the client has gone. Here the API has one connection,
    # held by a write waiting on a row lock: the daemon's write of v1 queues,
    # the daemon gives up after 0.5 s, spools v1, then spools v2. When the
    # lock goes, the queued v1 would run, stamped later than v2, had it no
    # deadline; with it the store refuses v1 and the replay ends on v2.
    from tests.support.held_api import connection_held_on_a_row_lock, one_connection_api
    from tests.support.outages import SupabaseStore
    from utils.infrastructure.backends.supabase_storage import SupabaseStorage

    project = supabase_project
    api = one_connection_api(project, pool_timeout=10).start()
    key, blocker = _key("late"), _key("blocker")
    try:
        daemon = FailoverStorage(SupabaseStorage(api.url, project.secret_key, timeout_seconds=0.5),
                                 Spool(tmp_path / "spool.sqlite3"), first_probe_after=3, max_probe_interval=1)
        with daemon, SupabaseStorage(api.url, project.secret_key, timeout_seconds=20) as other:
            daemon.setex(blocker, 3600, "{}")
            with connection_held_on_a_row_lock(project, blocker, lambda: other.setex(blocker, 3600, '{"other": 1}'),
                                               join_timeout=20):
                daemon.setex(key, 3600, '{"v": 1}')
                assert daemon.status()["state"] == DEGRADED
                daemon.setex(key, 3600, '{"v": 2}')
                wait_until(lambda: api._pool.get_stats().get("requests_waiting", 0),
                           "the write of v1 to queue for the API's connection")
            # The queued write of v1 has run (or been refused) once no request waits for the
            # API's connection and the connection is back in its pool.
            wait_until(lambda: (stats := api._pool.get_stats()).get("requests_waiting", 0) == 0
                       and stats.get("pool_available", 0) == 1, "the API to run the queued write of v1")
            assert daemon.wait_until_healthy(30), daemon.status()
        assert thread_row(SupabaseStore(project), key) == {"v": 2}
    finally:
        api.stop()


def test_update_during_an_outage_writes_nothing_and_leaves_the_stored_thread_whole(store, tmp_path):
    from utils.infrastructure.contract.errors import StorageUnavailableError

    key = _key("updated")

    def add_turn(current):
        turns = json.loads(current)["turns"] if current else []
        return json.dumps({"turns": [*turns, len(turns) + 1]})

    with store.client() as other_daemon:
        other_daemon.setex(key, 3600, '{"turns": [1]}')
    with _failover(store, tmp_path) as storage:
        store.down()
        storage.setex(_key("trips-the-circuit"), 60, "{}")
        assert storage.status()["state"] == DEGRADED
        with pytest.raises(StorageUnavailableError, match="update"):
            storage.update(key, add_turn, 3600)
        assert storage.status()["pending"] == 1, "only the setex was spooled"
        store.up()
        assert storage.wait_until_healthy(30)
        assert storage.update(key, add_turn, 3600) == '{"turns": [1, 2]}'
    assert thread_row(store, key) == {"turns": [1, 2]}
