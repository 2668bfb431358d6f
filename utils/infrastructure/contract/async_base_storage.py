"""The asyncio twin of :class:`ThreadStorage`: the same contract, awaited.

Validation is the same code as the synchronous interface's, so a value
refused by one is refused by the other.
"""

from __future__ import annotations

import asyncio
from abc import ABC, abstractmethod
from typing import Any, Self

from .base_storage import Ttl
from .errors import StorageClosedError
from .thread_info import ThreadInfo
from .validation import (
    DEFAULT_MAX_VALUE_BYTES,
    check_batch_size,
    check_key,
    check_limit,
    check_owner,
    check_user_id,
    ttl_to_seconds,
    validate_set,
    validate_update,
)
from .versioned_update import DEFAULT_MAX_ATTEMPTS, Updater, backoff_seconds, conflict, updated_value


class AsyncThreadStorage(ABC):
    """Awaitable key/value storage of JSON conversation threads with a per-key expiry."""

    backend_name: str = ""
    persistent: bool = False

    def __init__(self, *, max_value_bytes: int | None = None) -> None:
        self.max_value_bytes = max_value_bytes or DEFAULT_MAX_VALUE_BYTES
        self._closed = False

    async def set_with_ttl(
        self,
        key: str,
        ttl_seconds: Ttl,
        value: str,
        *,
        user_id: str | None = None,
        metadata: dict[str, Any] | None = None,
    ) -> None:
        """Store ``value`` under ``key`` for ``ttl_seconds``, replacing value and TTL."""
        args = validate_set(key, ttl_seconds, value, user_id, metadata, self.max_value_bytes)
        self._ensure_open()
        await self._set(*args)

    async def setex(self, key: str, ttl_seconds: Ttl, value: str) -> None:
        await self.set_with_ttl(key, ttl_seconds, value)

    async def get(self, key: str) -> str | None:
        key = check_key(key)
        self._ensure_open()
        return await self._get(key)

    async def delete(self, key: str) -> bool:
        key = check_key(key)
        self._ensure_open()
        return await self._delete(key)

    async def update(
        self,
        key: str,
        fn: Updater,
        ttl_seconds: Ttl,
        *,
        user_id: str | None = None,
        metadata: dict[str, Any] | None = None,
        max_attempts: int = DEFAULT_MAX_ATTEMPTS,
    ) -> str:
        """Atomically replace the thread with ``fn(current_json_or_None)``; see ThreadStorage.update."""
        args = validate_update(key, fn, ttl_seconds, user_id, metadata, max_attempts)
        for attempt in range(args.max_attempts):
            self._ensure_open()
            current, version = await self._get_versioned(args.key)
            value = updated_value(fn, current, self.max_value_bytes)
            if await self._set_if_version(args.key, args.ttl_seconds, value, args.user_id, args.metadata, version):
                return value
            await asyncio.sleep(backoff_seconds(attempt))
        raise conflict(args.key, args.max_attempts)

    async def cleanup_expired(self, batch_size: int = 1000) -> int:
        batch_size = check_batch_size(batch_size)
        self._ensure_open()
        return await self._cleanup_expired(batch_size)

    async def list_threads(self, user_id: str | None = None, limit: int = 50) -> list[ThreadInfo]:
        user_id = check_user_id(user_id)
        limit = check_limit(limit)
        self._ensure_open()
        return await self._list_threads(user_id, limit)

    async def touch(self, key: str, ttl_seconds: Ttl) -> bool:
        key = check_key(key)
        seconds = ttl_to_seconds(ttl_seconds)
        self._ensure_open()
        return await self._touch(key, seconds)

    async def delete_user_threads(self, user_id: str) -> int:
        user_id = check_owner(user_id)
        self._ensure_open()
        return await self._delete_user_threads(user_id)

    async def stats(self) -> dict[str, int]:
        self._ensure_open()
        return await self._stats()

    async def close(self) -> None:
        if not self._closed:
            self._closed = True
            await self._close()

    async def shutdown(self) -> None:
        await self.close()

    @property
    def closed(self) -> bool:
        return self._closed

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {'closed' if self._closed else 'open'}>"

    def _ensure_open(self) -> None:
        if self._closed:
            raise StorageClosedError(f"{type(self).__name__} is closed")

    @abstractmethod
    async def _set(self, key, ttl_seconds, value, user_id, metadata) -> None: ...

    @abstractmethod
    async def _get(self, key: str) -> str | None: ...

    @abstractmethod
    async def _delete(self, key: str) -> bool: ...

    @abstractmethod
    async def _cleanup_expired(self, batch_size: int) -> int: ...

    @abstractmethod
    async def _list_threads(self, user_id: str | None, limit: int) -> list[ThreadInfo]: ...

    @abstractmethod
    async def _touch(self, key: str, ttl_seconds: int) -> bool: ...

    @abstractmethod
    async def _delete_user_threads(self, user_id: str) -> int: ...

    @abstractmethod
    async def _stats(self) -> dict[str, int]: ...

    @abstractmethod
    async def _get_versioned(self, key: str) -> tuple[str | None, int]: ...

    @abstractmethod
    async def _set_if_version(self, key, ttl_seconds, value, user_id, metadata, expected_version: int) -> bool: ...

    async def _close(self) -> None:
        """Release the backend's resources; called once by :meth:`close`."""
