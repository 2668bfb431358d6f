"""Which servers get the default near cache: any but one on this machine.

On loopback the cache's own work (diffing, printing, MD5, a document inside
a JSON answer) costs more than the bytes it saves.
"""

from __future__ import annotations

import pytest

from utils.infrastructure.backends.postgres_storage import PostgresStorage, runs_locally
from utils.infrastructure.backends.supabase_storage import SupabaseStorage
from utils.infrastructure.remote.near_cache import NearCache, local_server

SECRET_KEY = "sb_secret_" + "x" * 31


@pytest.mark.parametrize(("host", "local"), [
    ("localhost", True), ("LOCALHOST", True), ("127.0.0.1", True), ("127.8.9.10", True), ("::1", True),
    ("[::1]", True), ("/var/run/postgresql", True), ("", True),
    ("10.0.0.5", False), ("db.abcdefgh.supabase.co", False), ("aws-0-eu-west-1.pooler.supabase.com", False),
    ("192.168.1.20", False), ("::ffff:8.8.8.8", False), ("localhost.example.com", False),
])
def test_local_hosts(host, local):
    assert local_server(host) is local


@pytest.mark.parametrize(("dsn", "local"), [
    ("postgresql://postgres:pw@127.0.0.1:5432/postgres", True),
    ("postgresql://postgres:pw@localhost/postgres", True),
    ("host=/tmp dbname=postgres", True),
    ("host=127.0.0.1,::1 dbname=postgres", True),
    ("host=127.0.0.1,10.0.0.5 dbname=postgres", False),  # one of them is elsewhere
    ("postgresql://postgres.abc:pw@aws-0-eu-west-1.pooler.supabase.com:6543/postgres", False),
    ("host=db.example.com hostaddr=127.0.0.1 dbname=postgres", True),  # hostaddr is where it connects
])
def test_a_connection_string_names_a_local_server_or_not(dsn, local, monkeypatch):
    monkeypatch.delenv("PGHOST", raising=False)
    monkeypatch.delenv("PGHOSTADDR", raising=False)
    assert runs_locally(dsn) is local


def test_with_no_host_libpq_takes_pghost(monkeypatch):
    monkeypatch.delenv("PGHOSTADDR", raising=False)
    monkeypatch.setenv("PGHOST", "db.example.com")
    assert not runs_locally("dbname=postgres")
    monkeypatch.delenv("PGHOST")
    assert runs_locally("dbname=postgres")  # libpq's Unix socket


@pytest.mark.parametrize(("url", "cached"), [
    ("http://127.0.0.1:54321", False), ("http://localhost:54321", False),
    ("https://abcdefghijklmnop.supabase.co", True),
])
def test_a_supabase_project_elsewhere_gets_the_cache(url, cached):
    with SupabaseStorage(url, SECRET_KEY) as storage:
        assert (storage.near_cache is not None) is cached
    with SupabaseStorage(url, SECRET_KEY, near_cache=False) as storage:
        assert storage.near_cache is None


def test_a_postgres_server_elsewhere_gets_the_cache():
    # TEST-NET-1: nothing answers; the pool connects in the background and is closed at once.
    with PostgresStorage("postgresql://postgres:pw@192.0.2.1:5432/postgres", connect_timeout=1) as storage:
        assert storage.near_cache is not None
    with PostgresStorage("postgresql://postgres:pw@127.0.0.1:9/postgres", connect_timeout=1) as storage:
        assert storage.near_cache is None


def test_a_cache_asked_for_is_kept_for_a_local_server_too():
    cache = NearCache()
    with PostgresStorage("postgresql://postgres:pw@127.0.0.1:9/postgres", near_cache=cache) as storage:
        assert storage.near_cache is cache
    with PostgresStorage("postgresql://postgres:pw@127.0.0.1:9/postgres", near_cache=True) as storage:
        assert storage.near_cache is not None
    with SupabaseStorage("http://127.0.0.1:54321", SECRET_KEY, near_cache=True) as storage:
        assert storage.near_cache is not None
