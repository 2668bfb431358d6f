"""The interface every backend implements, with the shared input checks."""

from __future__ import annotations

import threading
import time
from abc import ABC, abstractmethod
from datetime import timedelta
from typing import Any, Self

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

#: Threads one erase step of delete_user_threads removes at most, on every
#: backend: a bounded amount of work per statement (about 40 ms here), far
#: inside Supabase's 8 s statement timeout however many threads the user has.
USER_ERASE_BATCH = 5000

Ttl = int | timedelta


class ThreadStorage(ABC):
    """Key/value storage of JSON conversation threads with a per-key expiry.

    The public methods validate their arguments, then hand clean values to
    the backend's ``_set`` / ``_get`` / ``_delete`` / ``_cleanup_expired``.
    """

    #: Short name used in logs and by ``CONVERSATION_STORAGE_BACKEND``.
    backend_name: str = ""
    #: True when stored threads survive a restart of the process.
    persistent: bool = False

    def __init__(self, *, max_value_bytes: int | None = None) -> None:
        self.max_value_bytes = max_value_bytes or DEFAULT_MAX_VALUE_BYTES
        self._closed = threading.Event()

    # -- public contract ---------------------------------------------------

    def set_with_ttl(
        self,
        key: str,
        ttl_seconds: Ttl,
        value: str,
        *,
        user_id: str | None = None,
        metadata: dict[str, Any] | None = None,
    ) -> None:
        """Store ``value`` under ``key`` for ``ttl_seconds``, replacing value and TTL.

        Replacing a live thread keeps its ``user_id`` and ``metadata`` unless
        new ones are given.
        """
        args = validate_set(key, ttl_seconds, value, user_id, metadata, self.max_value_bytes)
        self._ensure_open()
        self._set(*args)

    def setex(self, key: str, ttl_seconds: Ttl, value: str) -> None:
        """Redis-style alias of :meth:`set_with_ttl`."""
        self.set_with_ttl(key, ttl_seconds, value)

    def get(self, key: str) -> str | None:
        """Return the JSON text stored under ``key``, or None if missing or expired."""
        key = check_key(key)
        self._ensure_open()
        return self._get(key)

    def delete(self, key: str) -> bool:
        """Remove ``key``; True when a live entry was removed."""
        key = check_key(key)
        self._ensure_open()
        return self._delete(key)

    def update(
        self,
        key: str,
        fn: Updater,
        ttl_seconds: Ttl,
        *,
        user_id: str | None = None,
        metadata: dict[str, Any] | None = None,
        max_attempts: int = DEFAULT_MAX_ATTEMPTS,
    ) -> str:
        """Atomically replace the thread with ``fn(current_json_or_None)``; return the new JSON.

        ``fn`` may run more than once (after losing to another writer), so it
        must only compute, not act.
        """
        args = validate_update(key, fn, ttl_seconds, user_id, metadata, max_attempts)
        for attempt in range(args.max_attempts):
            self._ensure_open()
            current, version = self._get_versioned(args.key)
            value = updated_value(fn, current, self.max_value_bytes)
            if self._set_if_version(args.key, args.ttl_seconds, value, args.user_id, args.metadata, version):
                return value
            time.sleep(backoff_seconds(attempt))
        raise conflict(args.key, args.max_attempts)

    def cleanup_expired(self, batch_size: int = 1000) -> int:
        """Remove at most ``batch_size`` expired entries and return how many went.

        Call again until it returns less than ``batch_size`` to clear a backlog.
        """
        batch_size = check_batch_size(batch_size)
        self._ensure_open()
        return self._cleanup_expired(batch_size)

    def list_threads(self, user_id: str | None = None, limit: int = 50) -> list[ThreadInfo]:
        """Live threads (of ``user_id``, if given), most recently accessed first."""
        user_id = check_user_id(user_id)
        limit = check_limit(limit)
        self._ensure_open()
        return self._list_threads(user_id, limit)

    def touch(self, key: str, ttl_seconds: Ttl) -> bool:
        """Give a live thread a new lifetime without rewriting it; False if none is live."""
        key = check_key(key)
        seconds = ttl_to_seconds(ttl_seconds)
        self._ensure_open()
        return self._touch(key, seconds)

    def delete_user_threads(self, user_id: str) -> int:
        """Erase every thread of ``user_id``, expired ones included; return how many."""
        user_id = check_owner(user_id)
        self._ensure_open()
        return self._delete_user_threads(user_id)

    def stats(self) -> dict[str, int]:
        """Counts of live and expired entries and their sizes in bytes."""
        self._ensure_open()
        return self._stats()

    def close(self) -> None:
        """Release connections and threads. Safe to call more than once."""
        if not self._closed.is_set():
            self._closed.set()
            self._close()

    def shutdown(self) -> None:
        """Alias of :meth:`close`, the name pal's storage backend uses."""
        self.close()

    @property
    def closed(self) -> bool:
        return self._closed.is_set()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def __repr__(self) -> str:
        state = "closed" if self.closed else "open"
        return f"<{type(self).__name__} {state}>"

    # -- backend hooks ------------------------------------------------------

    def _ensure_open(self) -> None:
        if self._closed.is_set():
            raise StorageClosedError(f"{type(self).__name__} is closed")

    @abstractmethod
    def _set(
        self,
        key: str,
        ttl_seconds: int,
        value: str,
        user_id: str | None,
        metadata: dict[str, Any] | None,
    ) -> None: ...

    @abstractmethod
    def _get(self, key: str) -> str | None: ...

    @abstractmethod
    def _delete(self, key: str) -> bool: ...

    @abstractmethod
    def _cleanup_expired(self, batch_size: int) -> int: ...

    @abstractmethod
    def _list_threads(self, user_id: str | None, limit: int) -> list[ThreadInfo]: ...

    @abstractmethod
    def _touch(self, key: str, ttl_seconds: int) -> bool: ...

    @abstractmethod
    def _delete_user_threads(self, user_id: str) -> int: ...

    @abstractmethod
    def _stats(self) -> dict[str, int]: ...

    @abstractmethod
    def _get_versioned(self, key: str) -> tuple[str | None, int]:
        """The live value and its version; (None, 0) when there is none."""

    @abstractmethod
    def _set_if_version(self, key, ttl_seconds, value, user_id, metadata, expected_version: int) -> bool:
        """Write only if the live version is ``expected_version`` (0: none live)."""

    def _close(self) -> None:
        """Release the backend's resources; called once by :meth:`close`."""
