"""Async twins of the backends that need no async client: memory and SQLite.

They reuse the synchronous backend's code. Memory operations never block, so
they run inline; SQLite does file I/O and may wait on another process's
lock, so its calls run in a worker thread, off the event loop.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from ..contract.async_base_storage import AsyncThreadStorage
from ..contract.base_storage import ThreadStorage
from .memory_storage import InMemoryStorage
from .sqlite_storage import SQLiteStorage

if TYPE_CHECKING:
    from ..remote.remote_calls import RemoteFunctionStorage


class _AsyncAdapter(AsyncThreadStorage):
    _offload = False

    def __init__(self, storage: ThreadStorage) -> None:
        self.sync_storage = storage
        super().__init__(max_value_bytes=storage.max_value_bytes)
        self.backend_name = storage.backend_name
        self.persistent = storage.persistent

    @property
    def max_value_bytes(self) -> int:
        return self.sync_storage.max_value_bytes

    @max_value_bytes.setter
    def max_value_bytes(self, value: int) -> None:
        self.sync_storage.max_value_bytes = value  # one limit for both faces of the store

    async def _run(self, fn: Callable[..., Any], *args: Any) -> Any:
        if self._offload:
            return await asyncio.to_thread(fn, *args)
        return fn(*args)

    async def _set(self, key, ttl_seconds, value, user_id, metadata) -> None:
        await self._run(self.sync_storage._set, key, ttl_seconds, value, user_id, metadata)

    async def _get(self, key: str) -> str | None:
        return await self._run(self.sync_storage._get, key)

    async def _delete(self, key: str) -> bool:
        return await self._run(self.sync_storage._delete, key)

    async def _cleanup_expired(self, batch_size: int) -> int:
        return await self._run(self.sync_storage._cleanup_expired, batch_size)

    async def _list_threads(self, user_id, limit):
        return await self._run(self.sync_storage._list_threads, user_id, limit)

    async def _touch(self, key: str, ttl_seconds: int) -> bool:
        return await self._run(self.sync_storage._touch, key, ttl_seconds)

    async def _delete_user_threads(self, user_id: str) -> int:
        return await self._run(self.sync_storage._delete_user_threads, user_id)

    async def _stats(self) -> dict[str, int]:
        return await self._run(self.sync_storage._stats)

    async def _get_versioned(self, key: str) -> tuple[str | None, int]:
        return await self._run(self.sync_storage._get_versioned, key)

    async def _set_if_version(self, key, ttl_seconds, value, user_id, metadata, expected_version: int) -> bool:
        return await self._run(
            self.sync_storage._set_if_version, key, ttl_seconds, value, user_id, metadata, expected_version
        )

    async def _close(self) -> None:
        await self._run(self.sync_storage.close)


class AsyncInMemoryStorage(_AsyncAdapter):
    """Process-memory storage for asyncio code (operations run inline: they never block)."""

    def __init__(self, storage: InMemoryStorage | None = None, **options: Any) -> None:
        super().__init__(storage or InMemoryStorage(**options))


class AsyncSQLiteStorage(_AsyncAdapter):
    """SQLite storage for asyncio code; every call runs in a worker thread.

    Create it with ``await AsyncSQLiteStorage.create(path)`` so that opening
    the file also happens off the event loop.
    """

    sync_storage: SQLiteStorage
    _offload = True

    def __init__(self, storage: SQLiteStorage) -> None:
        super().__init__(storage)

    @classmethod
    async def create(cls, path: str | os.PathLike | None = None, **options: Any) -> AsyncSQLiteStorage:
        return cls(await asyncio.to_thread(SQLiteStorage, path, **options))

    async def health(self) -> dict[str, Any]:
        self._ensure_open()
        return await self._run(self.sync_storage.health)


class AsyncFailoverStorage(_AsyncAdapter):
    """A FailoverStorage (remote store plus spool) for asyncio code, each call in a worker thread.

    The spool and its replay thread are synchronous by nature (a local file,
    a background thread), so the async face runs the one implementation off
    the event loop rather than keeping a second copy of the failover logic.
    """

    # A FailoverStorage, or the bare store when its spool could not open
    # (create_async_storage builds it only for the backends with failover).
    sync_storage: RemoteFunctionStorage
    _offload = True

    def __init__(self, storage: RemoteFunctionStorage) -> None:
        super().__init__(storage)

    def status(self) -> dict[str, Any]:
        return self.sync_storage.status()

    async def health(self) -> dict[str, Any]:
        self._ensure_open()
        return await self._run(self.sync_storage.health)

    async def wait_until_healthy(self, timeout: float) -> bool:
        return await self._run(self.sync_storage.wait_until_healthy, timeout)
