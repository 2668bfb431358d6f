"""The async twins: they keep the event loop free, and the environment picks them."""

from __future__ import annotations

import asyncio
import logging
import sqlite3
import threading

import pytest

from utils.infrastructure.backends.async_adapters import AsyncInMemoryStorage, AsyncSQLiteStorage
from utils.infrastructure.backends.postgres_storage import AsyncPostgresStorage
from utils.infrastructure.backends.sqlite_storage import SQLiteStorage
from utils.infrastructure.backends.supabase_storage import AsyncSupabaseStorage
from utils.infrastructure.contract.errors import StorageClosedError, StorageUnavailableError
from utils.infrastructure.storage_backend import get_async_storage, reset_async_storage


async def _ticks_while(operation, period: float = 0.01) -> int:
    """How often a concurrent task got to run while ``operation`` was awaited."""
    ticks = 0
    done = asyncio.Event()

    async def ticker():
        nonlocal ticks
        while not done.is_set():
            ticks += 1
            await asyncio.sleep(period)

    task = asyncio.create_task(ticker())
    await asyncio.sleep(0)
    try:
        await operation()
    finally:
        done.set()
        await task
    return ticks


#: Ticks that show the loop ran while a call waited.
ENOUGH_TICKS = 10


async def _ticks_until_released(operation, release) -> int:
    """How often a concurrent task ran while ``operation`` waited on a lock that the task releases itself.

    The lock goes once the task has run ENOUGH_TICKS times, so a free loop passes however
    slow the machine; a timed window would not. A blocked loop never lets the task run: a
    timer thread then releases the lock after 30 s, and the count shows the stall.
    """
    released = threading.Lock()

    def release_once():
        if released.acquire(blocking=False):
            release()

    fallback = threading.Timer(30, release_once)
    fallback.start()
    ticks = 0
    done = asyncio.Event()

    async def ticker():
        nonlocal ticks
        while not done.is_set():
            ticks += 1
            if ticks == ENOUGH_TICKS:
                release_once()
            await asyncio.sleep(0.01)

    task = asyncio.create_task(ticker())
    await asyncio.sleep(0)
    try:
        await operation()
    finally:
        done.set()
        fallback.cancel()
        release_once()
        await task
    return ticks


def test_sqlite_waits_for_a_lock_without_blocking_the_loop(tmp_path):
    path = tmp_path / "t.sqlite3"

    async def main():
        storage = await AsyncSQLiteStorage.create(path, busy_timeout=60)
        blocker = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
        blocker.execute("begin exclusive")
        try:
            async_ticks = await _ticks_until_released(lambda: storage.setex("thread:x", 60, "{}"),
                                                      lambda: blocker.execute("rollback"))
            assert await storage.get("thread:x") == "{}"
            blocker.execute("begin exclusive")

            sync_storage = SQLiteStorage(path, busy_timeout=0.5)

            async def blocking_write():  # the mistake the async twin exists to prevent
                with pytest.raises(StorageUnavailableError):
                    sync_storage.setex("thread:x", 60, "{}")

            sync_ticks = await _ticks_while(blocking_write)
            sync_storage.close()
        finally:
            if blocker.in_transaction:
                blocker.execute("rollback")
            blocker.close()
            await storage.close()
        return async_ticks, sync_ticks

    async_ticks, sync_ticks = asyncio.run(main())
    assert async_ticks >= ENOUGH_TICKS, "the loop kept running during the async call"
    assert sync_ticks <= 1, "a blocking call in a coroutine stalls the loop"


def test_postgres_waits_for_a_lock_without_blocking_the_loop(postgres_server, postgres_dsn):
    dbname = postgres_dsn.rsplit("/", 1)[1]

    async def main():
        storage = await AsyncPostgresStorage.create(postgres_dsn)
        await storage.setex("thread:x", 60, "{}")
        with postgres_server.connect(dbname) as locker:
            locker.execute("begin")
            locker.execute("lock table public.conversation_threads in access exclusive mode")
            ticks = await _ticks_until_released(lambda: storage.get("thread:x"), lambda: locker.execute("rollback"))
        await storage.close()
        return ticks

    assert asyncio.run(main()) >= ENOUGH_TICKS


def test_supabase_request_does_not_block_the_loop(supabase_project):
    async def main():
        storage = await AsyncSupabaseStorage.create(supabase_project.url, supabase_project.secret_key)
        await storage.setex("thread:x", 60, "{}")
        with supabase_project.connect() as locker:
            locker.execute("begin")
            locker.execute("lock table public.conversation_threads in access exclusive mode")
            ticks = await _ticks_until_released(lambda: storage.get("thread:x"), lambda: locker.execute("rollback"))
        await storage.close()
        return ticks

    assert asyncio.run(main()) >= ENOUGH_TICKS


def test_async_context_manager_closes():
    async def main():
        async with AsyncInMemoryStorage() as storage:
            await storage.setex("thread:a", 60, "{}")
            assert await storage.get("thread:a") == "{}"
        with pytest.raises(StorageClosedError):
            await storage.get("thread:a")
        return storage.sync_storage.closed

    assert asyncio.run(main()) is True


@pytest.mark.parametrize("backend", ["memory", "sqlite", "postgres", "supabase"])
def test_get_async_storage_picks_the_configured_backend(clean_env, request, tmp_path, backend):
    expected = {
        "memory": AsyncInMemoryStorage,
        "sqlite": AsyncSQLiteStorage,
        "postgres": AsyncPostgresStorage,
        "supabase": AsyncSupabaseStorage,
    }[backend]
    clean_env.setenv("CONVERSATION_STORAGE_BACKEND", backend)
    clean_env.setenv("CONVERSATION_STORAGE_STRICT", "true")
    clean_env.setenv("CONVERSATION_STORAGE_FAILOVER", "false")  # the native async clients
    if backend == "sqlite":
        clean_env.setenv("CONVERSATION_SQLITE_PATH", str(tmp_path / "t.sqlite3"))
    elif backend == "postgres":
        clean_env.setenv("DATABASE_URL", request.getfixturevalue("postgres_dsn"))
    elif backend == "supabase":
        project = request.getfixturevalue("supabase_project")
        clean_env.setenv("SUPABASE_URL", project.url)
        clean_env.setenv("SUPABASE_KEY", project.secret_key)

    async def main():
        first = await get_async_storage()
        again = await get_async_storage()
        await first.setex("thread:env", 60, '{"ok": 1}')
        value = await again.get("thread:env")
        await reset_async_storage()
        return first, again, value

    first, again, value = asyncio.run(main())
    assert type(first) is expected
    assert again is first
    assert value == '{"ok": 1}'
    assert first.closed


def test_get_async_storage_falls_back_loudly(clean_env, caplog):
    clean_env.setenv("CONVERSATION_STORAGE_BACKEND", "postgres")
    clean_env.setenv("DATABASE_URL", "postgresql://postgres:x@127.0.0.1:9/postgres")
    clean_env.setenv("CONVERSATION_STORAGE_TIMEOUT_SECONDS", "1")
    clean_env.setenv("CONVERSATION_STORAGE_FAILOVER", "false")

    async def main():
        storage = await get_async_storage()
        await reset_async_storage()
        return storage

    with caplog.at_level(logging.WARNING):
        storage = asyncio.run(main())
    assert isinstance(storage, AsyncInMemoryStorage)
    assert "will NOT survive a restart" in caplog.text


def test_async_daemons_get_failover_too(clean_env, supabase_project):
    from utils.infrastructure.backends.async_adapters import AsyncFailoverStorage

    clean_env.setenv("CONVERSATION_STORAGE_BACKEND", "supabase")
    clean_env.setenv("SUPABASE_URL", supabase_project.url)
    clean_env.setenv("SUPABASE_KEY", supabase_project.secret_key)
    # The hung call lasts this long: ample time for ENOUGH_TICKS ticks even on a loaded machine.
    clean_env.setenv("CONVERSATION_STORAGE_TIMEOUT_SECONDS", "3")
    gateway = supabase_project.gateway

    async def main():
        storage = await get_async_storage()
        assert isinstance(storage, AsyncFailoverStorage)
        await storage.setex("thread:before", 3600, '{"n": 1}')
        gateway.fault = "hang"
        try:
            ticks = await _ticks_while(lambda: storage.setex("thread:during", 3600, '{"n": 2}'))
            assert storage.status()["state"] == "degraded"
            assert await storage.get("thread:during") == '{"n": 2}'
        finally:
            gateway.fault = None
        assert await storage.wait_until_healthy(30)
        await reset_async_storage()
        return ticks

    assert asyncio.run(main()) >= ENOUGH_TICKS, "the loop ran while the store hung"
    with supabase_project.connect() as conn:
        rows = dict(conn.execute("select thread_id, conversation_data from public.conversation_threads").fetchall())
    assert rows == {"thread:before": {"n": 1}, "thread:during": {"n": 2}}
