"""The storage operations as calls of the SQL functions in ``sql/``.

Each operation is one function call; the Supabase and Postgres transports,
sync and async, only carry a :class:`Call` and hand back its raw result.
Documents go through :mod:`.json_envelope` here, on every path that writes
(set, update, replay) or returns them (get, update's read), so both
transports, both faces and the failover replay store a NUL the same way.
"""

from __future__ import annotations

import logging
from abc import abstractmethod
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any, NamedTuple

from . import json_delta, jsonb_text
from .async_base_storage import AsyncThreadStorage
from .base_storage import USER_ERASE_BATCH, ThreadStorage
from .errors import StorageSchemaError, StorageValueError
from .json_envelope import from_stored, to_stored
from .near_cache import Held, NearCache
from .schema import check_health
from .spool import SpooledWrite
from .thread_info import ThreadInfo


logger = logging.getLogger("conversation_storage")


class Call(NamedTuple):
    function: str
    params: dict[str, Any]
    decode: Callable[[Any], Any]


def _document_or_none(value: Any) -> str | None:
    if value is not None and not isinstance(value, str):
        raise StorageSchemaError(
            f"thread_get returned {type(value).__name__}, not JSON text: "
            "the database has an unexpected thread_get(); apply the files of sql/ again"
        )
    return from_stored(value)


def set_call(key: str, ttl_seconds: int, value: str, user_id: str | None, metadata: dict | None,
             deadline: float | None = None) -> Call:
    """thread_put (sql/012): thread_set answering {"version", "expires_at"}, with an optional deadline.

    Every set goes through it, with the near cache or without: thread_set's
    version + 1 costs a trigger call (sql/012), thread_put draws the version itself.
    """
    params = {"p_thread_id": key, "p_data": to_stored(value), "p_ttl_seconds": ttl_seconds}
    return Call("thread_put", _with_optional(params, user_id, metadata, deadline), _unchanged)


def _with_optional(params: dict[str, Any], user_id: str | None, metadata: dict | None,
                   deadline: float | None) -> dict[str, Any]:
    """``params`` with the write's optional arguments that are given (the functions default the rest)."""
    if user_id is not None:
        params["p_user_id"] = user_id
    if metadata is not None:
        params["p_metadata"] = metadata
    if deadline is not None:
        params["p_deadline"] = _timestamp(deadline)
    return params


def get_call(key: str) -> Call:
    return Call("thread_get", {"p_thread_id": key}, _document_or_none)


def delete_call(key: str, deadline: float | None = None) -> Call:
    return _before(deadline, Call("thread_delete", {"p_thread_id": key}, bool))


def _before(deadline: float | None, call: Call) -> Call:
    """``call`` refused by the server if it starts after ``deadline`` (sql/010's *_before functions)."""
    if deadline is None:
        return call
    return Call(f"{call.function}_before", {"p_deadline": _timestamp(deadline), **call.params}, call.decode)


class PlannedRead(NamedTuple):
    """A read through the near cache: what to tell the store this process holds."""

    held: Held | None
    #: What the read returns if the store answers "unchanged".
    text: str | None
    call: Call

    @classmethod
    def of(cls, cache: NearCache, key: str) -> PlannedRead:
        held = cache.get(key)
        params: dict[str, Any] = {"p_thread_id": key, "p_known_version": 0}
        text = None
        if held is not None:
            text = held.text if held.printed else jsonb_text.render(held.text)
            if text is not None:
                params["p_known_version"] = held.version
                if not held.printed:
                    # Held as this process wrote it: the store confirms the printing once.
                    params["p_known_md5"] = jsonb_text.fingerprint(text)
        return cls(held, text, Call("thread_fetch", params, _unchanged))

    def remember(self, cache: NearCache, key: str, answer: dict | None) -> str | None:
        """The document thread_fetch answered, from the cache when it said "unchanged"."""
        if answer is None:
            cache.forget(key)
            return None
        version = int(answer["version"])
        if "data" in answer:
            text = _document_or_none(answer["data"])
        elif self.text is not None and version == self.call.params["p_known_version"]:
            text = self.text
        else:
            raise StorageSchemaError(
                f"thread_fetch answered 'unchanged' at version {version}, which this process does not hold: "
                "the database has an unexpected thread_fetch(); apply the files of sql/ again"
            )
        cache.put(key, text, version, printed=True)
        return text


def patch_call(key: str, base_version: int, patch: str, size_bytes: int, ttl_seconds: int,
               user_id: str | None, metadata: dict | None, deadline: float | None = None) -> Call:
    params = {"p_thread_id": key, "p_base_version": base_version, "p_patch": patch,
              "p_size_bytes": size_bytes, "p_ttl_seconds": ttl_seconds}
    return Call("thread_patch", _with_optional(params, user_id, metadata, deadline), _unchanged)


class PlannedWrite(NamedTuple):
    """A write through the near cache: the patch against the held version, if one pays."""

    held: Held | None
    patch: str | None

    @classmethod
    def of(cls, cache: NearCache, key: str, value: str) -> PlannedWrite:
        if len(value) < cache.patch_min_chars:
            return cls(None, None)
        held = cache.get(key)
        if held is None:
            return cls(None, None)
        return cls(held, json_delta.diff(held.text, value))

    def patch_call(self, key, ttl_seconds, value, user_id, metadata, deadline) -> Call:
        assert self.held is not None and self.patch is not None
        return patch_call(key, self.held.version, self.patch, len(value.encode("utf-8")), ttl_seconds,
                          user_id, metadata, deadline)


def patch_refused(key: str, exc: StorageValueError) -> None:
    # The patch came from json_delta and the store could not apply it: a
    # bug, not the caller's fault. The whole document is written instead.
    logger.warning("the store refused the patch for %s (%s); writing the whole thread", key, exc)


def remember_written(cache: NearCache, key: str, value: str, answer: dict) -> Any:
    """Hold what thread_put / thread_patch wrote; return the new expiry as the store answered it."""
    cache.put(key, value, int(answer["version"]), printed=False)
    return answer["expires_at"]


def _near_cache(option: bool | NearCache | None) -> NearCache | None:
    if isinstance(option, NearCache):
        return option
    return NearCache() if option else None


def cleanup_call(batch_size: int) -> Call:
    return Call("cleanup_expired_threads", {"p_batch_size": batch_size}, int)


def list_call(user_id: str | None, limit: int) -> Call:
    params: dict[str, Any] = {"p_limit": limit}
    if user_id is not None:
        params["p_user_id"] = user_id
    return Call("thread_list", params, lambda items: [ThreadInfo.from_json(i) for i in items])


def touch_call(key: str, ttl_seconds: int) -> Call:
    return Call("thread_touch", {"p_thread_id": key, "p_ttl_seconds": ttl_seconds}, bool)


def delete_user_batch_call(user_id: str) -> Call:
    return Call("delete_user_threads_batch", {"p_user_id": user_id, "p_batch_size": USER_ERASE_BATCH}, int)


def get_versioned_call(key: str) -> Call:
    return Call("thread_get_versioned", {"p_thread_id": key},
                lambda r: (_document_or_none(r["data"]), int(r["version"])))


def set_if_version_call(key, ttl_seconds, value, user_id, metadata, expected_version: int,
                        deadline: float | None = None) -> Call:
    params = set_call(key, ttl_seconds, value, user_id, metadata).params
    params["p_expected_version"] = expected_version
    return _before(deadline, Call("thread_set_if_version", params, lambda version: version is not None))


def replay_call(write: SpooledWrite) -> Call:
    if write.op == "set":
        params = set_call(write.key, write.ttl, write.value, write.user_id, write.metadata).params
    else:
        params = {"p_thread_id": write.key}
    return Call("thread_replay", {**params, "p_op": write.op, "p_written_at": _timestamp(write.written_at)}, str)


def _timestamp(unix_time: float) -> str:
    return datetime.fromtimestamp(unix_time, tz=UTC).isoformat()


def _unchanged(value: Any) -> Any:
    return value


def unix_time(value: Any) -> float:
    """A timestamptz as psycopg (datetime) or PostgREST (ISO text) hands it back."""
    if isinstance(value, str):
        value = datetime.fromisoformat(value)
    return value.timestamp()


STATS_CALL = Call("thread_stats", {}, lambda report: {k: int(v) for k, v in report.items()})
HEALTH_CALL = Call("storage_health", {}, check_health)


class RemoteFunctionStorage(ThreadStorage):
    """A backend whose every operation is one call of a SQL function."""

    #: How long after a call started the server may still begin running it
    #: although the call failed (a request an HTTP API or a transaction
    #: pooler queued); 0 when it cannot run after the call failed.
    late_start_seconds = 0.0

    def __init__(self, *, max_value_bytes: int | None = None, near_cache: bool | NearCache | None = True) -> None:
        super().__init__(max_value_bytes=max_value_bytes)
        #: None when off; see near_cache.py.
        self.near_cache = _near_cache(near_cache)

    def health(self) -> dict[str, Any]:
        """Check reachability, role and schema version; return the server's report."""
        self._ensure_open()
        return self._invoke(HEALTH_CALL)

    def _set(self, key, ttl_seconds, value, user_id, metadata) -> None:
        self._write(key, ttl_seconds, value, user_id, metadata)

    def _write(self, key, ttl_seconds, value, user_id, metadata, deadline: float | None = None) -> Any:
        """Store ``value``; return the new expiry as the store answered it (for the failover clock)."""
        cache = self.near_cache
        if cache is None:
            return self._invoke(set_call(key, ttl_seconds, value, user_id, metadata, deadline))["expires_at"]
        plan = PlannedWrite.of(cache, key, value)
        try:
            if plan.patch is not None:
                try:
                    answer = self._invoke(plan.patch_call(key, ttl_seconds, value, user_id, metadata, deadline))
                    if answer is not None:
                        return remember_written(cache, key, value, answer)
                except StorageValueError as exc:
                    patch_refused(key, exc)
            answer = self._invoke(set_call(key, ttl_seconds, value, user_id, metadata, deadline))
            return remember_written(cache, key, value, answer)
        except BaseException:
            cache.forget(key)  # whether it was written is unknown
            raise

    def _get(self, key: str) -> str | None:
        cache = self.near_cache
        if cache is None:
            return self._invoke(get_call(key))
        read = PlannedRead.of(cache, key)
        return read.remember(cache, key, self._invoke(read.call))

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
        # One batch per call, each its own transaction, until one comes back
        # short: a user with millions of threads is erased in many bounded calls.
        total = 0
        while True:
            deleted = self._invoke(delete_user_batch_call(user_id))
            total += deleted
            if deleted < USER_ERASE_BATCH:
                return total

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
        return call.decode(self._call(call.function, call.params))

    @abstractmethod
    def _call(self, function: str, params: dict[str, Any]) -> Any:
        """Run one SQL function with named arguments; return its JSON-decoded result."""


class AsyncRemoteFunctionStorage(AsyncThreadStorage):
    """The asyncio twin of :class:`RemoteFunctionStorage`."""

    def __init__(self, *, max_value_bytes: int | None = None, near_cache: bool | NearCache | None = True) -> None:
        super().__init__(max_value_bytes=max_value_bytes)
        self.near_cache = _near_cache(near_cache)

    async def health(self) -> dict[str, Any]:
        self._ensure_open()
        return await self._invoke(HEALTH_CALL)

    async def _set(self, key, ttl_seconds, value, user_id, metadata) -> None:
        cache = self.near_cache
        if cache is None:
            await self._invoke(set_call(key, ttl_seconds, value, user_id, metadata))
            return
        plan = PlannedWrite.of(cache, key, value)
        try:
            if plan.patch is not None:
                try:
                    answer = await self._invoke(plan.patch_call(key, ttl_seconds, value, user_id, metadata, None))
                    if answer is not None:
                        remember_written(cache, key, value, answer)
                        return
                except StorageValueError as exc:
                    patch_refused(key, exc)
            remember_written(cache, key, value, await self._invoke(set_call(key, ttl_seconds, value, user_id, metadata)))
        except BaseException:
            cache.forget(key)
            raise

    async def _get(self, key: str) -> str | None:
        cache = self.near_cache
        if cache is None:
            return await self._invoke(get_call(key))
        read = PlannedRead.of(cache, key)
        return read.remember(cache, key, await self._invoke(read.call))

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
        total = 0
        while True:
            deleted = await self._invoke(delete_user_batch_call(user_id))
            total += deleted
            if deleted < USER_ERASE_BATCH:
                return total

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
        return call.decode(await self._call(call.function, call.params))

    @abstractmethod
    async def _call(self, function: str, params: dict[str, Any]) -> Any: ...
