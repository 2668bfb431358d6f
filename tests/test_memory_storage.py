"""What is specific to the in-memory backend: its sweeper thread."""

from __future__ import annotations

import threading
import time
import types

from tests.support.waiting import wait_until
from utils.infrastructure.backends import memory_storage
from utils.infrastructure.backends.memory_storage import InMemoryStorage


def _sweepers() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name == "conversation-storage-sweeper"]


def test_expired_entries_are_reclaimed_without_being_read(monkeypatch):
    # The storage's clock stands still until the test moves it: the 1 s TTL cannot
    # lapse before the count below, however slow the machine.
    now = [time.monotonic()]
    monkeypatch.setattr(memory_storage, "time", types.SimpleNamespace(**{**vars(time), "monotonic": lambda: now[0]}))
    with InMemoryStorage(sweep_interval_seconds=0.05) as storage:
        storage.setex("thread:forgotten", 1, "{}")
        storage.setex("thread:kept", 60, "{}")
        assert len(storage._entries) == 2
        now[0] += 1.2
        wait_until(lambda: len(storage._entries) == 1, "the sweeper to reclaim the expired entry")
        assert "thread:kept" in storage._entries


def test_no_thread_until_the_first_write_and_close_stops_it():
    before = len(_sweepers())
    storage = InMemoryStorage(sweep_interval_seconds=3600)
    assert len(_sweepers()) == before
    storage.setex("thread:x", 60, "{}")
    assert len(_sweepers()) == before + 1
    started = time.monotonic()
    storage.close()
    # Generous next to a loaded machine's delays, and nothing next to the hour a close that
    # waited for the sweep interval would take.
    assert time.monotonic() - started < 30, "close must not wait for the sweep interval"
    assert len(_sweepers()) == before


def test_replacing_a_live_entry_keeps_owner_and_metadata(tmp_path):
    with InMemoryStorage() as storage:
        storage.set_with_ttl("thread:owned", 60, "{}", user_id="alice", metadata={"tool": "chat"})
        storage.setex("thread:owned", 60, '{"turns": 2}')
        entry = storage._entries["thread:owned"]
        assert (entry.user_id, entry.metadata, entry.value) == ("alice", {"tool": "chat"}, '{"turns": 2}')


def test_stored_metadata_is_a_private_copy():
    with InMemoryStorage() as storage:
        metadata = {"tags": ["a"]}
        storage.set_with_ttl("thread:meta", 60, "{}", metadata=metadata)
        metadata["tags"].append("changed later")
        assert storage._entries["thread:meta"].metadata == {"tags": ["a"]}
