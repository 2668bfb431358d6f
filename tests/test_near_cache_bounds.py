"""The near cache's bounds: at most 1,024 threads and 64 Mi characters, least recently used first out.

An evicted thread is simply not held: the next get reads it in full again.
"""

from __future__ import annotations

import json

import pytest

from scripts.benchmarks.network_proxy import ShapingProxy
from tests.support.documents import conversation_document
from utils.infrastructure.backends.postgres_storage import PostgresStorage
from utils.infrastructure.remote.near_cache import NearCache

TTL = 3600


def test_the_default_bounds_are_the_documented_ones():
    cache = NearCache()
    assert (cache.max_entries, cache.max_chars) == (1024, 64 * 1024 * 1024)


def test_the_least_recently_used_thread_goes_first_when_there_are_too_many():
    cache = NearCache(max_entries=3)
    for version, key in enumerate("abc", start=1):
        cache.put(key, "{}", version, printed=True)
    assert cache.get("a") is not None  # now "b" is the least recently used
    cache.put("d", "{}", 4, printed=True)
    assert [key for key in "abcd" if cache.get(key) is not None] == ["a", "c", "d"]
    assert len(cache) == 3


def test_threads_go_oldest_first_until_the_characters_fit():
    cache = NearCache(max_chars=10)
    cache.put("a", "1234", 1, printed=True)
    cache.put("b", "1234", 2, printed=True)
    cache.put("c", "1234", 3, printed=True)  # 12 characters: "a" goes
    assert [key for key in "abc" if cache.get(key) is not None] == ["b", "c"]
    cache.put("d", "12345678", 4, printed=True)  # 16: "b", then "c" go
    assert [key for key in "abcd" if cache.get(key) is not None] == ["d"]


def test_a_thread_larger_than_the_whole_cache_is_not_held_nor_its_older_copy():
    cache = NearCache(max_chars=10)
    cache.put("a", "1234", 1, printed=True)
    cache.put("a", "12345678901", 2, printed=True)
    assert cache.get("a") is None
    assert len(cache) == 0


@pytest.fixture
def counted_postgres(postgres_server, postgres_dsn):
    """A PostgresStorage holding at most two threads, its traffic through a counting proxy."""
    with ShapingProxy(postgres_server.port, "LAN 1 ms") as proxy:
        dsn = postgres_dsn.replace(f":{postgres_server.port}/", f":{proxy.port}/")
        with PostgresStorage(dsn, max_size=1, near_cache=NearCache(max_entries=2)) as storage:
            yield storage, proxy


def _received_by_get(storage, proxy, key: str) -> int:
    proxy.reset()
    storage.get(key)
    return proxy.counters().bytes_to_client


def test_an_evicted_thread_is_read_in_full_again(counted_postgres):
    storage, proxy = counted_postgres
    documents = {key: conversation_document(50, seed=n) for n, key in enumerate(("thread:1", "thread:2", "thread:3"))}
    for key, document in documents.items():
        storage.setex(key, TTL, document)
        storage.get(key)  # the store confirms this process's printing once
    size = len(documents["thread:1"])
    assert _received_by_get(storage, proxy, "thread:3") < 1000 < size // 10, "a held thread crosses as its version"
    assert _received_by_get(storage, proxy, "thread:1") > size * 0.9, "the first thread was evicted"
    assert json.loads(storage.get("thread:1")) == json.loads(documents["thread:1"])
    assert _received_by_get(storage, proxy, "thread:1") < 1000, "and is held again"
