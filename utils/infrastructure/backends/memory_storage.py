"""Process-local storage: fast, thread-safe, and gone when the process exits."""

from __future__ import annotations

import itertools
import logging
import threading
import time
from typing import Any, NamedTuple

from ..contract.base_storage import ThreadStorage
from ..contract.thread_info import ThreadInfo, from_unix

logger = logging.getLogger("conversation_storage.memory")

DEFAULT_SWEEP_INTERVAL_SECONDS = 60.0
# As in thread_get(): reads refresh accessed_at at most this often.
ACCESS_REFRESH_SECONDS = 60


class _Entry(NamedTuple):
    value: str
    expires_at: float  # time.monotonic() deadline: immune to wall-clock jumps
    user_id: str | None
    metadata: dict[str, Any]
    created_at: float  # time.time(), for reporting only
    accessed_at: float  # time.time(), refreshed at most once a minute
    version: int  # from one counter per storage: never reused, even across expiry


class InMemoryStorage(ThreadStorage):
    """Threads in a dict, with a background sweeper reclaiming expired entries.

    Reads take no lock: entries are immutable tuples swapped in whole, and a
    single dict lookup is atomic, so a reader sees either the old or the new
    entry, never a mix. Writers take the lock to keep read-modify-write steps
    (created_at, user_id, metadata carried over) consistent.
    """

    backend_name = "memory"
    persistent = False

    def __init__(
        self,
        *,
        sweep_interval_seconds: float = DEFAULT_SWEEP_INTERVAL_SECONDS,
        max_value_bytes: int | None = None,
    ) -> None:
        super().__init__(max_value_bytes=max_value_bytes)
        self._entries: dict[str, _Entry] = {}
        self._lock = threading.Lock()
        self._sweep_interval = sweep_interval_seconds
        self._sweeper: threading.Thread | None = None
        self._versions = itertools.count(1)

    def _set(self, key, ttl_seconds, value, user_id, metadata) -> None:
        with self._lock:
            self._write(key, ttl_seconds, value, user_id, metadata)

    def _set_if_version(self, key, ttl_seconds, value, user_id, metadata, expected_version: int) -> bool:
        with self._lock:
            if self._live_version(key) != expected_version:
                return False
            self._write(key, ttl_seconds, value, user_id, metadata)
            return True

    def _get_versioned(self, key: str) -> tuple[str | None, int]:
        entry = self._entries.get(key)
        if entry is not None and entry.expires_at > time.monotonic():
            return entry.value, entry.version
        return None, 0

    def _live_version(self, key: str) -> int:
        entry = self._entries.get(key)
        return entry.version if entry is not None and entry.expires_at > time.monotonic() else 0

    def _write(self, key, ttl_seconds, value, user_id, metadata) -> None:
        """Store under the lock, with the rules of thread_set for what a replacement keeps."""
        now = time.monotonic()
        old = self._entries.get(key)
        if old is not None and old.expires_at > now:
            created_at = old.created_at
            user_id = old.user_id if user_id is None else user_id
            metadata = old.metadata if metadata is None else metadata
        else:
            created_at = time.time()
        self._entries[key] = _Entry(
            value, now + ttl_seconds, user_id, metadata or {}, created_at, time.time(), next(self._versions)
        )
        if self._sweeper is None:
            self._start_sweeper()

    def _get(self, key: str) -> str | None:
        entry = self._entries.get(key)
        if entry is not None and entry.expires_at > time.monotonic():
            if entry.accessed_at < time.time() - ACCESS_REFRESH_SECONDS:
                self._refresh_access(key, entry)
            return entry.value
        return None

    def _refresh_access(self, key: str, seen: _Entry) -> None:
        with self._lock:
            if self._entries.get(key) is seen:  # unless a writer replaced it meanwhile
                self._entries[key] = seen._replace(accessed_at=time.time())

    def _live_items(self) -> list[tuple[str, _Entry]]:
        now = time.monotonic()
        return [(k, e) for k, e in list(self._entries.items()) if e.expires_at > now]

    def _list_threads(self, user_id: str | None, limit: int) -> list[ThreadInfo]:
        live = [(k, e) for k, e in self._live_items() if user_id is None or e.user_id == user_id]
        live.sort(key=lambda item: (-item[1].accessed_at, item[0]))
        offset = time.time() - time.monotonic()
        return [
            ThreadInfo(
                key=k,
                user_id=e.user_id,
                created_at=from_unix(e.created_at),
                accessed_at=from_unix(e.accessed_at),
                expires_at=from_unix(e.expires_at + offset),
                size_bytes=len(e.value.encode()),
                metadata=e.metadata,
            )
            for k, e in live[:limit]
        ]

    def _touch(self, key: str, ttl_seconds: int) -> bool:
        now = time.monotonic()
        with self._lock:
            entry = self._entries.get(key)
            if entry is None or entry.expires_at <= now:
                return False
            self._entries[key] = entry._replace(expires_at=now + ttl_seconds, accessed_at=time.time())
            return True

    def _delete_user_threads(self, user_id: str) -> int:
        with self._lock:
            doomed = [k for k, e in self._entries.items() if e.user_id == user_id]
            for key in doomed:
                del self._entries[key]
        return len(doomed)

    def _stats(self) -> dict[str, int]:
        now = time.monotonic()
        entries = list(self._entries.values())
        live = [e for e in entries if e.expires_at > now]
        return {
            "live": len(live),
            "expired": len(entries) - len(live),
            "live_bytes": sum(len(e.value.encode()) for e in live),
            "total_bytes": sum(len(e.value.encode()) for e in entries),
        }

    def _delete(self, key: str) -> bool:
        with self._lock:
            entry = self._entries.pop(key, None)
        return entry is not None and entry.expires_at > time.monotonic()

    def _cleanup_expired(self, batch_size: int) -> int:
        now = time.monotonic()
        with self._lock:
            expired = [k for k, e in self._entries.items() if e.expires_at <= now][:batch_size]
            for key in expired:
                del self._entries[key]
        return len(expired)

    def _start_sweeper(self) -> None:
        # Started on the first write, so a storage that is never written to
        # (or only created to be replaced) costs no thread.
        self._sweeper = threading.Thread(
            target=self._sweep_until_closed, name="conversation-storage-sweeper", daemon=True
        )
        self._sweeper.start()

    def _sweep_until_closed(self) -> None:
        while not self._closed.wait(self._sweep_interval):
            try:
                while self._cleanup_expired(10_000) == 10_000:
                    pass
            except Exception:  # the sweeper must outlive any single failure
                logger.exception("sweeping expired conversation threads failed")

    def _close(self) -> None:
        sweeper = self._sweeper
        if sweeper is not None:
            sweeper.join(timeout=5.0)
