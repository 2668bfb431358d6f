"""Shared fixtures: a real PostgreSQL server, a local Supabase stand-in, and
the backends under test, each with a clock the test can move forward."""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import timedelta

import pytest
from freezegun import freeze_time

from tests.support.async_facade import EventLoopThread, SyncFacade
from tests.support.database import apply_sql
from tests.support.environment import is_own_variable
from tests.support.local_supabase import LocalSupabase
from tests.support.outages import PostgresStore, SupabaseStore
from tests.support.pgbouncer import PgBouncer
from tests.support.postgres_server import PASSWORD, PostgresServer
from utils.infrastructure import storage_backend
from utils.infrastructure.backends.async_adapters import AsyncInMemoryStorage, AsyncSQLiteStorage
from utils.infrastructure.backends.memory_storage import InMemoryStorage
from utils.infrastructure.backends.postgres_storage import AsyncPostgresStorage, PostgresStorage
from utils.infrastructure.backends.sqlite_storage import SQLiteStorage
from utils.infrastructure.backends.supabase_storage import AsyncSupabaseStorage, SupabaseStorage
from utils.infrastructure.contract.base_storage import ThreadStorage
from utils.infrastructure.remote.near_cache import NearCache

#: "-uncached": the remote backends without their near cache (near_cache.py);
#: the plain names run with it, patching every write of a thread they hold.
#: "postgres-pgbouncer": with the near cache, through a real PgBouncer in
#: transaction mode (the pooler changes the transport, not the calls).
BACKENDS = ["memory", "sqlite", "postgres", "supabase", "postgres-pgbouncer", "postgres-uncached", "supabase-uncached"]
ALL_BACKENDS = BACKENDS + [f"async-{name}" for name in BACKENDS]


@pytest.fixture(scope="session")
def postgres_server():
    server = PostgresServer().start()
    yield server
    server.cleanup()


@pytest.fixture(scope="session")
def local_supabase():
    stack = LocalSupabase()
    yield stack
    stack.close()


@pytest.fixture(scope="session")
def stoppable_postgres():
    """A Postgres server of its own with sql/ applied, for tests that stop it."""
    with PostgresServer() as server:
        with server.connect() as conn:
            apply_sql(conn)
        yield server


@pytest.fixture(params=["postgres", "supabase"])
def store(request):
    """A store the test can take away (``down()``) and bring back (``up()``); see tests/support/outages.py."""
    if request.param == "postgres":
        store = PostgresStore(request.getfixturevalue("stoppable_postgres"))
    else:
        store = SupabaseStore(request.getfixturevalue("supabase_project"))
    yield store
    store.up()


@pytest.fixture
def supabase_project(local_supabase):
    """The local Supabase stand-in with an empty conversation_threads table."""
    with local_supabase.connect() as conn:
        conn.execute("truncate public.conversation_threads, public.conversation_thread_tombstones,"
                     " public.conversation_thread_sweeps, public.conversation_user_erasures")
    local_supabase.gateway.reset_counts()
    return local_supabase


@pytest.fixture(scope="session")
def _postgres_database(postgres_server):
    name = postgres_server.create_database("direct_threads")
    with postgres_server.connect(name) as conn:
        apply_sql(conn)
    return name


@pytest.fixture
def postgres_dsn(postgres_server, _postgres_database):
    """Connection string of a plain Postgres database with sql/ applied and no threads."""
    with postgres_server.connect(_postgres_database) as conn:
        conn.execute("truncate public.conversation_threads, public.conversation_thread_tombstones,"
                     " public.conversation_thread_sweeps, public.conversation_user_erasures")
    return postgres_server.dsn_for(_postgres_database, password=PASSWORD)


@pytest.fixture(scope="session")
def pgbouncer(postgres_server):
    """PgBouncer in transaction mode, as it ships (it refuses startup options), before the session's Postgres.

    That server is never stopped by a test, so the pooler's server connections stay good.
    """
    with PgBouncer(postgres_server, ignore_startup_parameters="extra_float_digits") as bouncer:
        yield bouncer


@pytest.fixture
def pgbouncer_dsn(pgbouncer, postgres_dsn):
    """``postgres_dsn``'s database, through the pooler."""
    return pgbouncer.dsn_for(postgres_dsn.rsplit("/", 1)[1])


@pytest.fixture(scope="session")
def event_loop_thread():
    runner = EventLoopThread()
    yield runner
    runner.stop()


@dataclass
class BackendUnderTest:
    name: str
    storage: ThreadStorage
    #: Move the storage's own clock forward: freezegun for memory, real
    #: waiting for SQLite and Postgres, whose expiry runs on their own clocks.
    advance: Callable[[float], None]
    #: A second, synchronous client of the same store: "another daemon".
    peer: ThreadStorage


def _open_backend(name: str, request, runner: EventLoopThread | None):
    """Return (storage, peer) for backend ``name``; async when a runner is given.

    The peer is a synchronous client of the same store, closed by the caller
    when it is not the storage itself.
    """
    if name == "memory":
        storage = AsyncInMemoryStorage() if runner else InMemoryStorage()
        return storage, storage.sync_storage if runner else storage
    if name == "sqlite":
        path = request.getfixturevalue("tmp_path") / "threads.sqlite3"
        storage = runner.run(AsyncSQLiteStorage.create(path)) if runner else SQLiteStorage(path)
        return storage, SQLiteStorage(path)
    name, _, variant = name.partition("-")
    cache = (lambda: False) if variant == "uncached" else (lambda: NearCache(patch_min_chars=0))
    if name == "postgres":
        pooler = variant == "pgbouncer"  # its port is a free one, not 6432: say so
        dsn = request.getfixturevalue("pgbouncer_dsn" if pooler else "postgres_dsn")
        if runner:
            storage = runner.run(AsyncPostgresStorage.create(dsn, transaction_pooler=pooler, near_cache=cache()))
        else:
            storage = PostgresStorage(dsn, transaction_pooler=pooler, near_cache=cache())
        return storage, PostgresStorage(dsn, transaction_pooler=pooler, max_size=2, near_cache=cache())
    project = request.getfixturevalue("supabase_project")
    args = (project.url, project.secret_key)
    if runner:
        storage = runner.run(AsyncSupabaseStorage.create(*args, near_cache=cache()))
    else:
        storage = SupabaseStorage(*args, near_cache=cache())
    return storage, SupabaseStorage(*args, near_cache=cache())


@pytest.fixture(params=ALL_BACKENDS)
def backend(request) -> BackendUnderTest:
    is_async = request.param.startswith("async-")
    name = request.param.removeprefix("async-")
    runner = request.getfixturevalue("event_loop_thread") if is_async else None
    frozen = None
    if name == "memory" and not request.node.get_closest_marker("real_clock"):
        # freezegun serves real time to code running under threading's frames
        # (its default ignore list), so tests using threads take real_clock.
        frozen = freeze_time(real_asyncio=True)  # the event loop keeps real time for its timers
        clock = frozen.start()
    try:
        storage, peer = _open_backend(name, request, runner)
        advance = time.sleep
        if frozen is not None:
            advance = lambda seconds: clock.tick(timedelta(seconds=seconds))
        face = SyncFacade(storage, runner) if runner else storage
        yield BackendUnderTest(request.param, face, advance, peer)
        face.close()
        if peer is not storage and name != "memory":
            peer.close()
    finally:
        if frozen is not None:
            frozen.stop()


@pytest.fixture(scope="session", autouse=True)
def _private_data_home(tmp_path_factory):
    """Default SQLite and spool files of this run (and of the processes it starts) stay in a temp dir."""
    previous = os.environ.get("XDG_DATA_HOME")
    os.environ["XDG_DATA_HOME"] = str(tmp_path_factory.mktemp("xdg-data"))
    yield
    if previous is None:
        os.environ.pop("XDG_DATA_HOME", None)
    else:
        os.environ["XDG_DATA_HOME"] = previous


@pytest.fixture(autouse=True)
def _fresh_singleton():
    """Each test starts and ends without a process-wide storage."""
    storage_backend.reset_storage()
    yield
    storage_backend.reset_storage()


@pytest.fixture
def clean_env(monkeypatch, tmp_path):
    """An environment with none of the library's variables and no .env in reach."""
    for name in [name for name in os.environ if is_own_variable(name)]:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("CONVERSATION_SPOOL_PATH", str(tmp_path / "spool.sqlite3"))
    monkeypatch.chdir(tmp_path)
    return monkeypatch
