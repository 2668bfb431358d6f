"""Threads in an SQLite file: persistent, embedded, no server.

The semantics are those of the SQL functions in ``sql/``: expiry on the
storage's own clock (SQLite's ``julianday('now')``, i.e. the OS clock, never a
value computed in Python), expired rows filtered on read and removed in
batches, ``accessed_at`` refreshed at most once a minute. WAL mode and a busy
timeout let several threads and processes share one file; each thread has its
own connection, as sqlite3 connections must not be shared between threads.
"""

from __future__ import annotations

import json
import os
import sqlite3
import threading
import weakref
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from ..contract.base_storage import USER_ERASE_BATCH, ThreadStorage
from ..contract.errors import StorageConfigurationError, StorageError, StorageUnavailableError
from ..contract.thread_info import ThreadInfo, from_unix

SCHEMA_VERSION = 2
SYNCHRONOUS_MODES = ("full", "normal", "extra")

# Unix time in seconds (with fractions) from SQLite's own clock.
_NOW = "((julianday('now') - 2440587.5) * 86400.0)"

_SCHEMA = f"""
create table if not exists conversation_threads (
    thread_id         text primary key not null check (length(cast(thread_id as blob)) between 1 and 512),
    user_id           text,
    conversation_data text not null,
    created_at        real not null,
    accessed_at       real not null,
    expires_at        real not null,
    metadata          text not null default '{{}}',
    version           integer not null default 1
) without rowid;
create index if not exists conversation_threads_expires_at_idx on conversation_threads (expires_at);
create index if not exists conversation_threads_user_id_idx
    on conversation_threads (user_id) where user_id is not null;
pragma user_version = {SCHEMA_VERSION};
"""
# Files made by schema version 1 lack the version column.
_UPGRADE_FROM_1 = f"""
alter table conversation_threads add column version integer not null default 1;
pragma user_version = {SCHEMA_VERSION};
"""

# Same rules as public.thread_set: replacing a live thread keeps created_at and,
# unless new ones are given, user_id and metadata; an expired one starts over.
_SET = f"""
insert into conversation_threads
    (thread_id, user_id, conversation_data, created_at, accessed_at, expires_at, metadata)
values (:key, :user_id, :value, {_NOW}, {_NOW}, {_NOW} + :ttl, coalesce(:metadata, '{{}}'))
on conflict (thread_id) do update set
    conversation_data = excluded.conversation_data,
    expires_at  = excluded.expires_at,
    accessed_at = excluded.accessed_at,
    version     = version + 1,
    created_at  = case when expires_at > {_NOW} then created_at else excluded.created_at end,
    user_id     = case when expires_at > {_NOW} then coalesce(:user_id, user_id) else :user_id end,
    metadata    = case when expires_at > {_NOW} then coalesce(:metadata, metadata)
                       else coalesce(:metadata, '{{}}') end
"""
_GET_VERSIONED = f"select conversation_data, version from conversation_threads where thread_id = ? and expires_at > {_NOW}"
# Compare-and-set, as public.thread_set_if_version. Expected version 0 (no
# live thread): the set above, replacing only an expired row.
_CREATE_IF_ABSENT = _SET + f" where expires_at <= {_NOW}"
_UPDATE_IF_VERSION = f"""
update conversation_threads set
    conversation_data = :value,
    expires_at  = {_NOW} + :ttl,
    accessed_at = {_NOW},
    version     = version + 1,
    user_id     = coalesce(:user_id, user_id),
    metadata    = coalesce(:metadata, metadata)
 where thread_id = :key and version = :expected and expires_at > {_NOW}
"""
_GET = f"""
select conversation_data, accessed_at < {_NOW} - 60 from conversation_threads
 where thread_id = ? and expires_at > {_NOW}
"""
_TOUCH = f"update conversation_threads set accessed_at = {_NOW} where thread_id = ? and accessed_at < {_NOW} - 60"
_DELETE = f"delete from conversation_threads where thread_id = ? returning expires_at > {_NOW}"
_TOUCH_TTL = f"""
update conversation_threads set expires_at = {_NOW} + ?, accessed_at = {_NOW}
 where thread_id = ? and expires_at > {_NOW}
"""
_LIST = f"""
select thread_id, user_id, created_at, accessed_at, expires_at,
       length(cast(conversation_data as blob)), metadata
  from conversation_threads
 where expires_at > {_NOW} and (:user_id is null or user_id = :user_id)
 order by accessed_at desc, thread_id
 limit :limit
"""
# A batch at a time, as public.delete_user_threads_batch: each statement
# commits on its own, so other writers get the file between batches instead
# of waiting out (and perhaps timing out on) one long erase.
_DELETE_USER_BATCH = """
delete from conversation_threads where thread_id in (
    select thread_id from conversation_threads where user_id = ? limit ?
)
"""
_STATS = f"""
select count(*) filter (where expires_at > {_NOW}),
       count(*) filter (where expires_at <= {_NOW}),
       coalesce(sum(length(cast(conversation_data as blob))) filter (where expires_at > {_NOW}), 0),
       coalesce(sum(length(cast(conversation_data as blob))), 0)
  from conversation_threads
"""
_CLEANUP = f"""
delete from conversation_threads where thread_id in (
    select thread_id from conversation_threads where expires_at <= {_NOW} order by expires_at limit ?
)
"""


class _Connection(sqlite3.Connection):
    """A connection that can be weakly referenced (the base class cannot)."""


def default_path() -> Path:
    """``$XDG_DATA_HOME/conversation-storage/threads.sqlite3`` (``~/.local/share`` by default)."""
    base = os.environ.get("XDG_DATA_HOME") or Path.home() / ".local" / "share"
    return Path(base) / "conversation-storage" / "threads.sqlite3"


class SQLiteStorage(ThreadStorage):
    """Storage in one SQLite file, safe for many threads and processes at once."""

    backend_name = "sqlite"
    persistent = True

    def __init__(
        self,
        path: str | os.PathLike | None = None,
        *,
        busy_timeout: float = 10.0,
        synchronous: str = "full",
        max_value_bytes: int | None = None,
    ) -> None:
        super().__init__(max_value_bytes=max_value_bytes)
        if synchronous.lower() not in SYNCHRONOUS_MODES:
            raise StorageConfigurationError(
                f"SQLite synchronous mode {synchronous!r} is not one of {', '.join(SYNCHRONOUS_MODES)}"
            )
        self.path = Path(path) if path is not None else default_path()
        self.url = str(self.path)
        self._busy_timeout = busy_timeout
        self._synchronous = synchronous.lower()
        self._local = threading.local()
        # Weak, so a finished thread's connection is closed when its
        # thread-local goes away instead of piling up here.
        self._connections: weakref.WeakSet[_Connection] = weakref.WeakSet()
        self._connections_lock = threading.Lock()
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise StorageUnavailableError(f"cannot create the directory of {self.path}: {exc}") from exc
        with self._translated_errors("open"):
            conn = self._connection()
            # Only a new file needs the DDL; skipping it otherwise means opening
            # takes no write lock, so it succeeds while another process writes.
            version = conn.execute("pragma user_version").fetchone()[0]
            if version == 1:
                conn.executescript(_UPGRADE_FROM_1)
            elif version < SCHEMA_VERSION:
                conn.executescript(_SCHEMA)

    def health(self) -> dict[str, Any]:
        self._ensure_open()
        with self._translated_errors("health"):
            version = self._connection().execute("pragma user_version").fetchone()[0]
            mode = self._connection().execute("pragma journal_mode").fetchone()[0]
        return {"schema_version": version, "journal_mode": mode, "path": str(self.path)}

    def _set(self, key, ttl_seconds, value, user_id, metadata) -> None:
        with self._translated_errors("set"):
            self._connection().execute(_SET, self._set_params(key, ttl_seconds, value, user_id, metadata))

    @staticmethod
    def _set_params(key, ttl_seconds, value, user_id, metadata) -> dict[str, Any]:
        return {
            "key": key,
            "ttl": ttl_seconds,
            "value": value,
            "user_id": user_id,
            "metadata": None if metadata is None else json.dumps(metadata, ensure_ascii=False),
        }

    def _get_versioned(self, key: str) -> tuple[str | None, int]:
        with self._translated_errors("get"):
            row = self._connection().execute(_GET_VERSIONED, (key,)).fetchone()
        return (row[0], row[1]) if row else (None, 0)

    def _set_if_version(self, key, ttl_seconds, value, user_id, metadata, expected_version: int) -> bool:
        params = self._set_params(key, ttl_seconds, value, user_id, metadata)
        statement = _CREATE_IF_ABSENT if expected_version == 0 else _UPDATE_IF_VERSION
        if expected_version:
            params["expected"] = expected_version
        with self._translated_errors("update"):
            return self._connection().execute(statement, params).rowcount > 0

    def _get(self, key: str) -> str | None:
        with self._translated_errors("get"):
            conn = self._connection()
            row = conn.execute(_GET, (key,)).fetchone()
            if row is None:
                return None
            if row[1]:
                conn.execute(_TOUCH, (key,))
            return row[0]

    def _delete(self, key: str) -> bool:
        with self._translated_errors("delete"):
            row = self._connection().execute(_DELETE, (key,)).fetchone()
        return bool(row and row[0])

    def _cleanup_expired(self, batch_size: int) -> int:
        with self._translated_errors("cleanup"):
            return self._connection().execute(_CLEANUP, (batch_size,)).rowcount

    def _list_threads(self, user_id: str | None, limit: int) -> list[ThreadInfo]:
        with self._translated_errors("list"):
            rows = self._connection().execute(_LIST, {"user_id": user_id, "limit": limit}).fetchall()
        return [
            ThreadInfo(key, owner, from_unix(created), from_unix(accessed), from_unix(expires), size,
                       json.loads(metadata))
            for key, owner, created, accessed, expires, size, metadata in rows
        ]

    def _touch(self, key: str, ttl_seconds: int) -> bool:
        with self._translated_errors("touch"):
            return self._connection().execute(_TOUCH_TTL, (ttl_seconds, key)).rowcount > 0

    def _delete_user_threads(self, user_id: str) -> int:
        total = 0
        with self._translated_errors("delete_user_threads"):
            while True:
                deleted = self._connection().execute(_DELETE_USER_BATCH, (user_id, USER_ERASE_BATCH)).rowcount
                total += deleted
                if deleted < USER_ERASE_BATCH:
                    return total

    def _stats(self) -> dict[str, int]:
        with self._translated_errors("stats"):
            live, expired, live_bytes, total_bytes = self._connection().execute(_STATS).fetchone()
        return {"live": live, "expired": expired, "live_bytes": live_bytes, "total_bytes": total_bytes}

    def _connection(self) -> sqlite3.Connection:
        conn = getattr(self._local, "conn", None)
        if conn is None:
            # isolation_level=None: every statement commits on its own; each
            # operation is one statement, so each is atomic.
            conn = sqlite3.connect(
                self.path,
                timeout=self._busy_timeout,
                isolation_level=None,
                check_same_thread=False,  # close() runs on whichever thread calls it
                factory=_Connection,
            )
            conn.execute("pragma journal_mode = wal")
            conn.execute(f"pragma synchronous = {self._synchronous}")
            with self._connections_lock:
                self._connections.add(conn)
            self._local.conn = conn
        return conn

    @contextmanager
    def _translated_errors(self, operation: str) -> Iterator[None]:
        try:
            yield
        except sqlite3.OperationalError as exc:
            # "database is locked" after the busy timeout, I/O errors, a
            # read-only or vanished file: the store cannot be used right now.
            raise StorageUnavailableError(f"SQLite {operation} failed on {self.path}: {exc}") from exc
        except sqlite3.Error as exc:
            raise StorageError(f"SQLite {operation} failed on {self.path}: {exc}") from exc

    def _close(self) -> None:
        with self._connections_lock:
            connections = list(self._connections)
            self._connections.clear()
        for conn in connections:
            conn.close()
