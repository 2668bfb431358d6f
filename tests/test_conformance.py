"""The contract every backend keeps. Each test runs once per backend."""

from __future__ import annotations

import json
import threading
from datetime import timedelta

import pytest

from tests.support.documents import conversation_document, document_of_size
from utils.infrastructure.errors import StorageClosedError, StorageError


def test_get_returns_what_was_set(backend):
    document = conversation_document(turns=4)
    backend.storage.set_with_ttl("thread:a", 60, document)
    assert json.loads(backend.storage.get("thread:a")) == json.loads(document)


def test_get_of_missing_key_is_none(backend):
    assert backend.storage.get("thread:missing") is None


def test_setex_is_set_with_ttl_in_redis_argument_order(backend):
    backend.storage.setex("thread:b", 60, '{"turns": [1, 2]}')
    assert json.loads(backend.storage.get("thread:b")) == {"turns": [1, 2]}


def test_set_replaces_the_value(backend):
    backend.storage.setex("thread:c", 60, '{"v": 1}')
    backend.storage.setex("thread:c", 60, '{"v": 2}')
    assert json.loads(backend.storage.get("thread:c")) == {"v": 2}


@pytest.mark.parametrize("document", ["null", "0", '"text"', "[]", "{}", "true", '{"nested": {"a": [1, 2.5, null]}}'])
def test_any_json_document_round_trips(backend, document):
    backend.storage.setex("thread:doc", 60, document)
    stored = backend.storage.get("thread:doc")
    assert stored is not None, "a stored JSON null must not read back as missing"
    assert json.loads(stored) == json.loads(document)


def test_unicode_and_escapes_round_trip(backend):
    document = json.dumps({"text": "naïve ✓ 日本語 🤖 \u001b[31m red \t tab \\ backslash \"quote\"", "\u00e9": 1})
    backend.storage.setex("thread:unicode", 60, document)
    assert json.loads(backend.storage.get("thread:unicode")) == json.loads(document)


def test_non_ascii_key(backend):
    key = "thread:ключ-✓"
    backend.storage.setex(key, 60, '{"ok": true}')
    assert json.loads(backend.storage.get(key)) == {"ok": True}


def test_key_of_exactly_512_bytes_is_accepted(backend):
    key = "k" * 510 + "é"  # 512 bytes in UTF-8
    backend.storage.setex(key, 60, "{}")
    assert backend.storage.get(key) == "{}"


def test_largest_realistic_thread_round_trips(backend):
    document = document_of_size(2_300_000)
    assert len(document) > 2_000_000
    backend.storage.setex("thread:big", 60, document)
    assert json.loads(backend.storage.get("thread:big")) == json.loads(document)


def test_entry_expires_after_its_ttl(backend):
    backend.storage.setex("thread:ttl", 1, '{"x": 1}')
    assert backend.storage.get("thread:ttl") is not None
    backend.advance(1.2)
    assert backend.storage.get("thread:ttl") is None


def test_timedelta_ttl(backend):
    backend.storage.setex("thread:td", timedelta(seconds=1), '{"x": 1}')
    assert backend.storage.get("thread:td") is not None
    backend.advance(1.2)
    assert backend.storage.get("thread:td") is None


def test_set_replaces_the_ttl_with_a_longer_one(backend):
    backend.storage.setex("thread:longer", 1, '{"v": 1}')
    backend.storage.setex("thread:longer", 60, '{"v": 2}')
    backend.advance(1.2)
    assert json.loads(backend.storage.get("thread:longer")) == {"v": 2}


def test_set_replaces_the_ttl_with_a_shorter_one(backend):
    backend.storage.setex("thread:shorter", 60, '{"v": 1}')
    backend.storage.setex("thread:shorter", 1, '{"v": 2}')
    backend.advance(1.2)
    assert backend.storage.get("thread:shorter") is None


def test_expired_key_can_be_set_again(backend):
    backend.storage.setex("thread:again", 1, '{"v": 1}')
    backend.advance(1.2)
    backend.storage.setex("thread:again", 60, '{"v": 2}')
    assert json.loads(backend.storage.get("thread:again")) == {"v": 2}


def test_delete_reports_whether_a_live_entry_was_removed(backend):
    backend.storage.setex("thread:del", 60, "{}")
    assert backend.storage.delete("thread:del") is True
    assert backend.storage.get("thread:del") is None
    assert backend.storage.delete("thread:del") is False
    assert backend.storage.delete("thread:never") is False


def test_delete_of_expired_entry_is_false(backend):
    backend.storage.setex("thread:gone", 1, "{}")
    backend.advance(1.2)
    assert backend.storage.delete("thread:gone") is False


def test_cleanup_removes_only_expired_entries(backend):
    for i in range(5):
        backend.storage.setex(f"thread:old{i}", 1, "{}")
    backend.storage.setex("thread:live", 60, "{}")
    backend.advance(1.2)
    assert backend.storage.cleanup_expired(batch_size=3) == 3
    assert backend.storage.cleanup_expired(batch_size=3) == 2
    assert backend.storage.cleanup_expired(batch_size=3) == 0
    assert backend.storage.get("thread:live") == "{}"


def test_user_id_and_metadata_are_accepted(backend):
    backend.storage.set_with_ttl("thread:meta", 60, "{}", user_id="user-1", metadata={"tool": "chat", "n": 1})
    assert backend.storage.get("thread:meta") == "{}"


@pytest.mark.real_clock
def test_concurrent_writers_and_readers(backend):
    errors: list[BaseException] = []

    def worker(n: int) -> None:
        try:
            for i in range(10):
                backend.storage.setex(f"thread:w{n}", 60, json.dumps({"writer": n, "i": i}))
                assert json.loads(backend.storage.get(f"thread:w{n}"))["writer"] == n
        except BaseException as exc:  # noqa: BLE001 (collected and re-raised below)
            errors.append(exc)

    threads = [threading.Thread(target=worker, args=(n,)) for n in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    assert all(json.loads(backend.storage.get(f"thread:w{n}")) == {"writer": n, "i": 9} for n in range(4))


def test_closed_storage_refuses_calls(backend):
    backend.storage.close()
    backend.storage.close()  # idempotent
    with pytest.raises(StorageClosedError):
        backend.storage.get("thread:x")
    with pytest.raises(StorageError):
        backend.storage.setex("thread:x", 60, "{}")


def test_context_manager_closes(backend):
    with backend.storage as storage:
        storage.setex("thread:cm", 60, "{}")
    assert storage.closed


def test_shutdown_is_close(backend):
    backend.storage.shutdown()
    assert backend.storage.closed
