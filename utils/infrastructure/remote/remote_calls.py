"""The backends whose every operation is one call of a SQL function in ``sql/``.

The calls themselves are built in function_calls.py, the near cache's in
near_cache_calls.py; the Supabase and Postgres transports only run them.
"""

from __future__ import annotations

import time
from abc import abstractmethod
from typing import TYPE_CHECKING, Any

from ..contract.async_base_storage import AsyncThreadStorage
from ..contract.base_storage import USER_ERASE_BATCH, ThreadStorage  # noqa: F401 - USER_ERASE_BATCH: also a name here for tests
from ..contract.errors import StorageSchemaError, StorageUnavailableError, StorageValueError
from ..contract.thread_info import ThreadInfo
from .function_calls import (  # noqa: F401 - also this module's names for the failover layer and tests
    HEALTH_CALL,
    STATS_CALL,
    Call,
    UserErase,
    cleanup_call,
    delete_call,
    delete_user_batch_call,
    get_call,
    get_versioned_call,
    list_call,
    replay_call,
    set_call,
    set_if_version_call,
    touch_call,
    unix_time,
)
from .near_cache import NearCache
from .near_cache_calls import PlannedRead, PlannedWrite, near_cache_of
from .schema_fallbacks import Instead, instead_of, near_cache_unsupported, warn_near_cache_off

if TYPE_CHECKING:
    # Only named: the failover layer hands its spooled writes to replay().
    from ..failover.spool import SpooledWrite


class RemoteFunctionStorage(ThreadStorage):
    """A backend whose every operation is one call of a SQL function."""

    #: How long after a call started the server may still begin running it
    #: although the call failed (a request an HTTP API or a transaction
    #: pooler queued); 0 when it cannot run after the call failed.
    late_start_seconds = 0.0

    def __init__(self, *, max_value_bytes: int | None = None, near_cache: bool | NearCache | None = None,
                 local_server: bool = False) -> None:
        super().__init__(max_value_bytes=max_value_bytes)
        #: None when off, and by default when ``local_server`` (the server runs on this machine): near_cache.py.
        self.near_cache = near_cache_of(near_cache, local=local_server)
        #: Why this store runs the way of an older schema (schema_fallbacks.py), once it does.
        self.older_schema: str | None = None
        #: Why the failover layer that should wrap this store could not start (its spool), if so.
        self.failover_error: str | None = None

    def health(self) -> dict[str, Any]:
        """Check reachability, role and schema version; return the server's report."""
        self._ensure_open()
        return _checked_for_near_cache(self, self._invoke(HEALTH_CALL))

    def status(self) -> dict[str, Any]:
        """As :meth:`FailoverStorage.status`: here calls go straight to the store, with no spool."""
        return {
            "state": "direct",
            "failover": "off" if self.failover_error is None else "unavailable",
            "pending": 0,
            "last_error": self.failover_error,
        }

    def wait_until_healthy(self, timeout: float) -> bool:
        """As :meth:`FailoverStorage.wait_until_healthy`: with no spool to replay, until the store answers."""
        deadline = time.monotonic() + timeout
        while True:
            try:
                self.health()
                return True
            except StorageUnavailableError:
                if time.monotonic() >= deadline:
                    return False
                time.sleep(min(0.2, max(0.0, deadline - time.monotonic())))

    def _set(self, key, ttl_seconds, value, user_id, metadata) -> None:
        self._write(key, ttl_seconds, value, user_id, metadata)

    def _write(self, key, ttl_seconds, value, user_id, metadata, deadline: float | None = None) -> Any:
        """Store ``value``; return the new expiry as the store answered it (for the failover clock)."""
        write = PlannedWrite.of(self.near_cache, key, ttl_seconds, value, user_id, metadata, deadline)
        try:
            if write.patch is not None:
                try:
                    answer = self._invoke(write.patch)
                except StorageValueError as exc:
                    write.patch_refused(exc)
                    answer = None
                if answer is not None:
                    return write.remember(answer)
            return write.remember(self._invoke(write.whole()))
        except BaseException:
            write.forget()
            raise

    def _get(self, key: str) -> str | None:
        cache = self.near_cache
        if cache is None:
            return self._invoke(get_call(key))  # nothing to tell the store, nothing to keep
        read = PlannedRead.of(cache, key)
        return read.remember(self._invoke(read.call))

    def _delete(self, key: str) -> bool:
        return self._remove(key)

    def _remove(self, key: str, deadline: float | None = None) -> bool:
        self._forget(key)
        return self._invoke(delete_call(key, deadline))

    def _forget(self, key: str) -> None:
        if self.near_cache is not None:
            self.near_cache.forget(key)

    def _cleanup_expired(self, batch_size: int) -> int:
        return self._invoke(cleanup_call(batch_size))

    def _list_threads(self, user_id: str | None, limit: int) -> list[ThreadInfo]:
        return self._invoke(list_call(user_id, limit))

    def _touch(self, key: str, ttl_seconds: int) -> bool:
        return self._invoke(touch_call(key, ttl_seconds))

    def _delete_user_threads(self, user_id: str) -> int:
        erase = UserErase(user_id)
        while not erase.done:
            erase.count(self._invoke(erase.call))
        return erase.total

    def _stats(self) -> dict[str, int]:
        return self._invoke(STATS_CALL)

    def _get_versioned(self, key: str) -> tuple[str | None, int]:
        return self._invoke(get_versioned_call(key))

    def replay(self, write: SpooledWrite) -> str:
        """Apply a spooled write unless something newer reached the thread; return thread_replay's answer."""
        return self._invoke(replay_call(write))

    def _set_if_version(self, key, ttl_seconds, value, user_id, metadata, expected_version: int) -> bool:
        self._forget(key)
        return self._invoke(set_if_version_call(key, ttl_seconds, value, user_id, metadata, expected_version))

    def close(self) -> None:
        super().close()
        if self.near_cache is not None:
            self.near_cache.clear()

    def _invoke(self, call: Call) -> Any:
        try:
            return call.decode(self._call(call.function, call.params))
        except StorageSchemaError as error:
            instead = _fallback(self, call, error)
            return instead.answer if instead.call is None else self._invoke(instead.call)

    @abstractmethod
    def _call(self, function: str, params: dict[str, Any]) -> Any:
        """Run one SQL function with named arguments; return its JSON-decoded result."""


class AsyncRemoteFunctionStorage(AsyncThreadStorage):
    """The asyncio twin of :class:`RemoteFunctionStorage`."""

    def __init__(self, *, max_value_bytes: int | None = None, near_cache: bool | NearCache | None = None,
                 local_server: bool = False) -> None:
        super().__init__(max_value_bytes=max_value_bytes)
        self.near_cache = near_cache_of(near_cache, local=local_server)
        self.older_schema: str | None = None

    async def health(self) -> dict[str, Any]:
        self._ensure_open()
        return _checked_for_near_cache(self, await self._invoke(HEALTH_CALL))

    async def _set(self, key, ttl_seconds, value, user_id, metadata) -> None:
        await self._write(key, ttl_seconds, value, user_id, metadata)

    async def _write(self, key, ttl_seconds, value, user_id, metadata, deadline: float | None = None) -> Any:
        write = PlannedWrite.of(self.near_cache, key, ttl_seconds, value, user_id, metadata, deadline)
        try:
            if write.patch is not None:
                try:
                    answer = await self._invoke(write.patch)
                except StorageValueError as exc:
                    write.patch_refused(exc)
                    answer = None
                if answer is not None:
                    return write.remember(answer)
            return write.remember(await self._invoke(write.whole()))
        except BaseException:
            write.forget()
            raise

    async def _get(self, key: str) -> str | None:
        cache = self.near_cache
        if cache is None:
            return await self._invoke(get_call(key))  # nothing to tell the store, nothing to keep
        read = PlannedRead.of(cache, key)
        return read.remember(await self._invoke(read.call))

    async def _delete(self, key: str) -> bool:
        self._forget(key)
        return await self._invoke(delete_call(key))

    def _forget(self, key: str) -> None:
        if self.near_cache is not None:
            self.near_cache.forget(key)

    async def _cleanup_expired(self, batch_size: int) -> int:
        return await self._invoke(cleanup_call(batch_size))

    async def _list_threads(self, user_id: str | None, limit: int) -> list[ThreadInfo]:
        return await self._invoke(list_call(user_id, limit))

    async def _touch(self, key: str, ttl_seconds: int) -> bool:
        return await self._invoke(touch_call(key, ttl_seconds))

    async def _delete_user_threads(self, user_id: str) -> int:
        erase = UserErase(user_id)
        while not erase.done:
            erase.count(await self._invoke(erase.call))
        return erase.total

    async def _stats(self) -> dict[str, int]:
        return await self._invoke(STATS_CALL)

    async def _get_versioned(self, key: str) -> tuple[str | None, int]:
        return await self._invoke(get_versioned_call(key))

    async def _set_if_version(self, key, ttl_seconds, value, user_id, metadata, expected_version: int) -> bool:
        self._forget(key)
        return await self._invoke(
            set_if_version_call(key, ttl_seconds, value, user_id, metadata, expected_version)
        )

    async def _invoke(self, call: Call) -> Any:
        try:
            return call.decode(await self._call(call.function, call.params))
        except StorageSchemaError as error:
            instead = _fallback(self, call, error)
            return instead.answer if instead.call is None else await self._invoke(instead.call)

    @abstractmethod
    async def _call(self, function: str, params: dict[str, Any]) -> Any: ...


def _checked_for_near_cache(storage: RemoteFunctionStorage | AsyncRemoteFunctionStorage,
                            report: dict[str, Any]) -> dict[str, Any]:
    """``report`` (storage_health's), after switching the near cache off if the schema cannot serve it."""
    reason = near_cache_unsupported(report)
    if reason is not None and storage.near_cache is not None:
        _older_schema(storage, reason)
    return report


def _fallback(storage: RemoteFunctionStorage | AsyncRemoteFunctionStorage, call: Call,
              error: StorageSchemaError) -> Instead:
    """The older way to make ``call`` (schema_fallbacks.py), the near cache now off; re-raises ``error`` if none."""
    instead = instead_of(call, error)
    _older_schema(storage, f"{call.function}() is missing: {error.detail or error}")
    return instead


def _older_schema(storage: RemoteFunctionStorage | AsyncRemoteFunctionStorage, reason: str) -> None:
    """Switch the near cache off for good; say once why and what to run."""
    cache, storage.near_cache = storage.near_cache, None
    if cache is not None:
        cache.clear()
    if storage.older_schema is None:
        storage.older_schema = reason
        warn_near_cache_off(type(storage).__name__, reason)
