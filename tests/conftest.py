"""Shared fixtures: a real PostgreSQL server, a local Supabase stand-in, and
the backends under test, each with a clock the test can move forward."""

from __future__ import annotations

import time
from dataclasses import dataclass
from datetime import timedelta
from typing import Callable

import pytest
from freezegun import freeze_time

from tests.support.local_supabase import LocalSupabase
from tests.support.postgres_server import PostgresServer
from utils.infrastructure import storage_backend
from utils.infrastructure.base_storage import ThreadStorage
from utils.infrastructure.memory_storage import InMemoryStorage
from utils.infrastructure.supabase_storage import SupabaseStorage

BACKENDS = ["memory", "supabase"]


@pytest.fixture(scope="session")
def postgres_server():
    server = PostgresServer().start()
    yield server
    server.cleanup()


@pytest.fixture(scope="session")
def local_supabase(postgres_server):
    stack = LocalSupabase(postgres_server)
    yield stack
    stack.close()


@pytest.fixture
def supabase_project(local_supabase):
    """The local Supabase stand-in with an empty conversation_threads table."""
    with local_supabase.connect() as conn:
        conn.execute("truncate public.conversation_threads")
    local_supabase.gateway.reset_counts()
    return local_supabase


@dataclass
class BackendUnderTest:
    name: str
    storage: ThreadStorage
    #: Move the storage's own clock forward: freezegun for memory, real
    #: waiting for Postgres, whose expiry runs on the server's now().
    advance: Callable[[float], None]


@pytest.fixture(params=BACKENDS)
def backend(request) -> BackendUnderTest:
    if request.param == "memory" and request.node.get_closest_marker("real_clock"):
        storage = InMemoryStorage()
        yield BackendUnderTest("memory", storage, time.sleep)
        storage.close()
    elif request.param == "memory":
        # freezegun serves real time to code running under threading's frames
        # (its default ignore list), so tests using threads take real_clock.
        with freeze_time() as frozen:
            storage = InMemoryStorage()
            yield BackendUnderTest("memory", storage, lambda s: frozen.tick(timedelta(seconds=s)))
            storage.close()
    else:
        project = request.getfixturevalue("supabase_project")
        storage = SupabaseStorage(project.url, project.service_role_key)
        yield BackendUnderTest("supabase", storage, time.sleep)
        storage.close()


@pytest.fixture(autouse=True)
def _fresh_singleton():
    """Each test starts and ends without a process-wide storage."""
    storage_backend.reset_storage()
    yield
    storage_backend.reset_storage()


@pytest.fixture
def clean_env(monkeypatch, tmp_path):
    """An environment with none of the library's variables and no .env in reach."""
    for name in (
        "CONVERSATION_STORAGE_BACKEND", "SUPABASE_URL", "SUPABASE_KEY", "SUPABASE_SERVICE_ROLE_KEY",
        "CONVERSATION_TIMEOUT_HOURS", "CONVERSATION_MAX_VALUE_BYTES", "CONVERSATION_STORAGE_STRICT",
        "CONVERSATION_STORAGE_TIMEOUT_SECONDS",
    ):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.chdir(tmp_path)
    return monkeypatch
