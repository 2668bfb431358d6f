"""Erasing a user wins over every write of their threads acknowledged before it, wherever it was spooled."""

from __future__ import annotations

import json
import uuid

from tests.support.outages import HeldProbes
from tests.support.rows import thread_row
from tests.support.waiting import wait_until_answered
from utils.infrastructure.contract.errors import StorageUnavailableError
from utils.infrastructure.failover.failover_storage import DEGRADED, FailoverStorage
from utils.infrastructure.failover.spool import Spool


def _failover(store, tmp_path) -> FailoverStorage:
    return FailoverStorage(store.client(), Spool(tmp_path / "spool.sqlite3"), first_probe_after=0.2,
                           max_probe_interval=1.0)


def _names() -> tuple[str, str]:
    tag = uuid.uuid4().hex[:8]
    return f"thread:erase-{tag}", f"user-{tag}"


def test_a_spooled_setex_naming_no_user_is_erased_with_the_thread_it_follows(store, tmp_path):
    key, user = _names()
    with _failover(store, tmp_path) as daemon_a, HeldProbes(daemon_a) as probes:
        store.down()
        daemon_a.set_with_ttl(key, 3600, '{"turn": 1}', user_id=user)
        daemon_a.setex(key, 3600, '{"turn": 2}')  # pal's next turn names no user
        assert daemon_a.status()["state"] == DEGRADED
        store.up()
        with store.client() as daemon_b:
            assert daemon_b.delete_user_threads(user) == 0  # nothing of theirs has reached the store yet
        probes.release()
        assert daemon_a.wait_until_healthy(30)
        assert daemon_a.get(key) is None
    assert thread_row(store, key, "conversation_data", "user_id") is None


def test_a_thread_written_again_after_the_erase_lives_on(store, tmp_path):
    key, user = _names()
    with _failover(store, tmp_path) as daemon_a, HeldProbes(daemon_a) as probes:
        store.down()
        daemon_a.set_with_ttl(key, 3600, '{"turn": 1}', user_id=user)
        store.up()
        with store.client() as daemon_b:
            daemon_b.delete_user_threads(user)
        store.down()
        daemon_a.setex(key, 3600, '{"turn": "after the erase"}')
        store.up()
        probes.release()
        assert daemon_a.wait_until_healthy(30)
    assert thread_row(store, key, "conversation_data", "user_id") == ({"turn": "after the erase"}, user), "the write after the erase keeps its owner"


def test_an_erase_through_a_daemon_covers_its_spool_and_its_reads(store, tmp_path):
    key, user = _names()
    other_key = f"{key}-someone-else"
    with _failover(store, tmp_path) as daemon, HeldProbes(daemon) as probes:
        store.down()
        daemon.set_with_ttl(key, 3600, '{"turn": 1}', user_id=user)
        daemon.setex(key, 3600, '{"turn": 2}')
        daemon.set_with_ttl(other_key, 3600, '{"kept": true}', user_id="someone-else")
        assert daemon.get(key) == '{"turn": 2}'  # from the spool
        store.up()
        # The daemon's own client, whose connection pool reconnects with a backoff.
        wait_until_answered(probes.health, "the daemon's client to reach the store again",
                            (StorageUnavailableError,))
        # The circuit is still open (its probe is held); the erase itself reaches the store.
        assert daemon.status()["state"] == DEGRADED
        assert daemon.delete_user_threads(user) == 1
        assert daemon.get(key) is None, "a read after the erase never answers the erased thread"
        assert json.loads(daemon.get(other_key)) == {"kept": True}
    assert thread_row(store, key, "conversation_data", "user_id") is None
    assert thread_row(store, other_key, "conversation_data", "user_id") == ({"kept": True}, "someone-else")


def test_a_spooled_write_of_an_erased_user_takes_the_value_it_replaced_with_it(store, tmp_path):
    key, user = _names()
    with store.client() as other_daemon:
        other_daemon.setex(key, 3600, '{"turn": "older, no owner"}')
    with _failover(store, tmp_path) as daemon_a, HeldProbes(daemon_a) as probes:
        store.down()
        daemon_a.set_with_ttl(key, 3600, '{"turn": "of the user"}', user_id=user)
        store.up()
        with store.client() as daemon_b:
            assert daemon_b.delete_user_threads(user) == 0  # the row the store holds is nobody's
        probes.release()
        assert daemon_a.wait_until_healthy(30)
    assert thread_row(store, key, "conversation_data", "user_id") is None, "neither the erased write nor the value it replaced"
