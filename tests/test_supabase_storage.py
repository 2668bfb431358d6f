"""What is specific to the Supabase path: HTTP, keys, the server's clock, SQL effects."""

from __future__ import annotations

import json
import socket
import threading
import time
from datetime import UTC, datetime, timedelta

import pytest
from freezegun import freeze_time

from tests.support.documents import conversation_document, next_turn
from tests.support.postgres_server import free_port
from tests.support.rows import has_lapsed, thread_row
from tests.support.waiting import wait_until
from utils.infrastructure.backends.supabase_storage import SupabaseStorage
from utils.infrastructure.contract.errors import StorageUnavailableError
from utils.infrastructure.contract.json_envelope import MARKER, to_stored
from utils.infrastructure.remote.near_cache import NearCache


@pytest.fixture
def storage(supabase_project):
    with SupabaseStorage(supabase_project.url, supabase_project.secret_key) as storage:
        yield storage


#: What these tests check of a thread's row: its owner, its times, and xmin (whether the row was rewritten).
ROW_COLUMNS = ("user_id", "metadata", "created_at", "accessed_at", "expires_at", "xmin::text::bigint")


def _row(project, key):
    return thread_row(project, key, *ROW_COLUMNS)


def _stored_data(project, key):
    return thread_row(project, key, "conversation_data", "size_bytes")


def _row_count(project) -> int:
    with project.connect() as conn:
        return conn.execute("select count(*) from public.conversation_threads").fetchone()[0]


@pytest.mark.parametrize("cached", [True, False], ids=["near-cache", "no-cache"])
def test_each_operation_is_exactly_one_http_request(supabase_project, cached):
    gateway = supabase_project.gateway
    big = conversation_document(20)
    # The gateway is on loopback: a cache given explicitly patches as for a project elsewhere.
    storage = SupabaseStorage(supabase_project.url, supabase_project.secret_key,
                              near_cache=NearCache() if cached else False)
    operations = [
        ("thread_put", lambda: storage.setex("thread:one", 60, '{"a": 1}')),
        ("thread_fetch" if cached else "thread_get", lambda: storage.get("thread:one")),
        ("thread_fetch" if cached else "thread_get", lambda: storage.get("thread:one")),
        ("thread_fetch" if cached else "thread_get", lambda: storage.get("thread:missing")),
        ("thread_put", lambda: storage.setex("thread:one", 60, big)),
        ("thread_patch" if cached else "thread_put", lambda: storage.setex("thread:one", 60, next_turn(big))),
        ("thread_delete", lambda: storage.delete("thread:one")),
        ("cleanup_expired_threads", lambda: storage.cleanup_expired()),
    ]
    with storage:
        for function, operation in operations:
            gateway.reset_counts()
            operation()
            assert dict(gateway.counts) == {function: 1}


def test_health_reports_the_service_role(storage):
    report = storage.health()
    assert report["role"] == "service_role"
    assert report["rls_enabled"] is True


def test_unreachable_url_raises_unavailable():
    with SupabaseStorage(f"http://127.0.0.1:{free_port()}", "any-key", timeout_seconds=2) as storage:
        with pytest.raises(StorageUnavailableError, match="cannot reach"):
            storage.get("thread:x")
        with pytest.raises(StorageUnavailableError):
            storage.setex("thread:x", 60, "{}")


def test_sub_second_timeout_is_honoured_and_raises_unavailable():
    # A server that accepts connections and never answers.
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(8)
        url = f"http://127.0.0.1:{listener.getsockname()[1]}"
        with SupabaseStorage(url, "any-key", timeout_seconds=0.3) as storage:
            started = time.monotonic()
            with pytest.raises(StorageUnavailableError, match="in time"):
                storage.get("thread:x")
            elapsed = time.monotonic() - started
    # Well below the 10 s default shows the 0.3 s timeout was used, with room for a
    # loaded machine that takes seconds to wake the waiting call.
    assert 0.25 < elapsed < 5.0


def test_expiry_follows_the_server_clock_not_the_client_clock(storage):
    # A client clock a day ahead (or behind) must not expire or revive anything.
    # 5 s, not 2: both reads must come before it lapses, with room for a slow machine.
    with freeze_time(datetime.now(UTC) + timedelta(days=1)):
        storage.setex("thread:clock", 5, '{"a": 1}')
        assert storage.get("thread:clock") is not None
    with freeze_time(datetime.now(UTC) - timedelta(days=1)):
        assert storage.get("thread:clock") is not None
    wait_until(lambda: storage.get("thread:clock") is None, "the thread to expire on the server's clock")
    with freeze_time(datetime.now(UTC) - timedelta(days=1)):
        assert storage.get("thread:clock") is None


def test_expiry_is_computed_by_the_server(storage, supabase_project):
    storage.setex("thread:server", 3600, "{}")
    with supabase_project.connect() as conn:
        lifetime = conn.execute(
            "select extract(epoch from expires_at - now()) from public.conversation_threads"
            " where thread_id = 'thread:server'"
        ).fetchone()[0]
    assert 3590 < lifetime <= 3600


def test_get_filters_expired_rows_without_deleting_them(storage, supabase_project):
    storage.setex("thread:stale", 1, "{}")
    wait_until(lambda: has_lapsed(supabase_project, "thread:stale"), "the thread to expire on the server's clock")
    assert storage.get("thread:stale") is None
    assert _row(supabase_project, "thread:stale") is not None, "reads must not write deletes"
    assert storage.cleanup_expired() == 1
    assert _row(supabase_project, "thread:stale") is None


def test_get_refreshes_accessed_at_at_most_once_a_minute(storage, supabase_project):
    storage.setex("thread:hot", 60, "{}")
    first = _row(supabase_project, "thread:hot")
    for _ in range(5):
        storage.get("thread:hot")
    assert _row(supabase_project, "thread:hot") == first, "hot reads must not rewrite the row"

    with supabase_project.connect() as conn:
        conn.execute(
            "update public.conversation_threads set accessed_at = now() - interval '2 minutes'"
            " where thread_id = 'thread:hot'"
        )
    storage.get("thread:hot")
    refreshed_at = _row(supabase_project, "thread:hot")[3]
    assert datetime.now(UTC) - refreshed_at < timedelta(seconds=10)


def test_replacing_keeps_owner_and_metadata_until_the_thread_expires(storage, supabase_project):
    # Only the second write's TTL is short: the first thread must still be live when it is replaced.
    storage.set_with_ttl("thread:owned", 3600, "{}", user_id="alice", metadata={"tool": "chat"})
    created_at = _row(supabase_project, "thread:owned")[2]
    storage.setex("thread:owned", 1, '{"turns": 2}')  # pal's add_turn passes neither
    user_id, metadata, created_again, *_ = _row(supabase_project, "thread:owned")
    assert (user_id, metadata, created_again) == ("alice", {"tool": "chat"}, created_at)

    wait_until(lambda: has_lapsed(supabase_project, "thread:owned"), "the thread to expire on the server's clock")
    storage.setex("thread:owned", 60, '{"new": true}')  # an expired thread starts over
    user_id, metadata, created_new, *_ = _row(supabase_project, "thread:owned")
    assert (user_id, metadata) == (None, {})
    assert created_new > created_at


def test_cleanup_deletes_in_batches(storage, supabase_project):
    with supabase_project.connect() as conn:
        conn.execute(
            "insert into public.conversation_threads (thread_id, conversation_data, expires_at)"
            " select 'thread:old' || i, '{}', now() - interval '1 hour' from generate_series(1, 25) i"
        )
    storage.setex("thread:live", 60, "{}")
    assert [storage.cleanup_expired(batch_size=10) for _ in range(4)] == [10, 10, 5, 0]
    assert _row_count(supabase_project) == 1
    with supabase_project.connect() as conn:  # as service_role, through its grants alone
        swept = conn.execute("select cardinality(thread_ids) from public.conversation_thread_sweeps order by id").fetchall()
    assert swept == [(10,), (10,), (5,)]


def test_concurrent_cleanups_share_the_backlog(storage, supabase_project):
    with supabase_project.connect() as conn:
        conn.execute(
            "insert into public.conversation_threads (thread_id, conversation_data, expires_at)"
            " select 'thread:old' || i, '{}', now() - interval '1 hour' from generate_series(1, 2000) i"
        )
    totals: list[int] = []

    def sweep() -> None:
        with SupabaseStorage(supabase_project.url, supabase_project.secret_key) as own:
            deleted = 0
            while (batch := own.cleanup_expired(batch_size=100)) > 0:
                deleted += batch
            totals.append(deleted)

    sweepers = [threading.Thread(target=sweep) for _ in range(3)]
    for t in sweepers:
        t.start()
    for t in sweepers:
        t.join()
    assert sum(totals) == 2000
    assert _row_count(supabase_project) == 0


def test_an_unusable_url_is_a_configuration_error():
    from utils.infrastructure.contract.errors import StorageConfigurationError

    with pytest.raises(StorageConfigurationError, match="SUPABASE_URL"):
        SupabaseStorage("db.example.com:5432", "key")


def test_a_nul_document_is_stored_in_an_envelope_and_others_as_json(storage, supabase_project):
    document = json.dumps({"turns": [{"content": "tool output \u0000 binary"}]})
    storage.setex("thread:nul", 60, document)
    data, size_bytes = _stored_data(supabase_project, "thread:nul")
    assert data == {MARKER: document}, "the row holds the caller's text as one JSON string"
    assert size_bytes == len(to_stored(document).encode())
    assert storage.get("thread:nul") == document

    # No NUL: the row holds the document itself, as before.
    storage.setex("thread:plain", 60, '{"text": "\\\\u0000 is not a NUL"}')
    assert _stored_data(supabase_project, "thread:plain")[0] == {"text": "\\u0000 is not a NUL"}
