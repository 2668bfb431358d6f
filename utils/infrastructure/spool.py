"""A durable, ordered queue of writes the remote store has not received yet.

An SQLite file (synchronous=FULL): a write is acknowledged to the daemon only
once it is on disk here, so it survives the daemon being killed, and it is
replayed in the order it was made.
"""

from __future__ import annotations

import json
import sqlite3
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .errors import StorageUnavailableError

_SCHEMA = """
create table if not exists spooled_writes (
    id         integer primary key autoincrement,
    key        text not null,
    op         text not null check (op in ('set', 'delete')),
    value      text,
    ttl        integer,
    user_id    text,
    metadata   text,
    written_at real not null
);
create index if not exists spooled_writes_key_idx on spooled_writes (key, id);
"""


@dataclass(frozen=True)
class SpooledWrite:
    id: int
    key: str
    op: str
    value: str | None
    ttl: int | None
    user_id: str | None
    metadata: dict[str, Any] | None
    written_at: float

    @property
    def expired(self) -> bool:
        return self.op == "set" and self.written_at + (self.ttl or 0) <= time.time()


class Spool:
    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._conn = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False, timeout=30)
            self._conn.execute("pragma journal_mode = wal")
            self._conn.execute("pragma synchronous = full")
            self._conn.executescript(_SCHEMA)
        except (OSError, sqlite3.Error) as exc:
            raise StorageUnavailableError(f"cannot open the failover spool {self.path}: {exc}") from exc
        # One connection shared by the daemon's threads and the replayer.
        self._lock = threading.Lock()

    def append_set(self, key, ttl, value, user_id, metadata) -> None:
        self._append(key, "set", value, ttl, user_id, metadata)

    def append_delete(self, key: str) -> None:
        self._append(key, "delete", None, None, None, None)

    def _append(self, key, op, value, ttl, user_id, metadata) -> None:
        with self._lock:
            self._conn.execute(
                "insert into spooled_writes (key, op, value, ttl, user_id, metadata, written_at)"
                " values (?, ?, ?, ?, ?, ?, ?)",
                (key, op, value, ttl, user_id, None if metadata is None else json.dumps(metadata), time.time()),
            )

    def latest(self, key: str) -> SpooledWrite | None:
        """The newest spooled write of ``key``, if any."""
        with self._lock:
            row = self._conn.execute(
                "select * from spooled_writes where key = ? order by id desc limit 1", (key,)
            ).fetchone()
        return _write(row) if row else None

    def oldest(self, limit: int = 100) -> list[SpooledWrite]:
        with self._lock:
            rows = self._conn.execute("select * from spooled_writes order by id limit ?", (limit,)).fetchall()
        return [_write(r) for r in rows]

    def remove(self, write_id: int) -> None:
        with self._lock:
            self._conn.execute("delete from spooled_writes where id = ?", (write_id,))

    def discard(self, key: str) -> None:
        """Drop every spooled write of ``key`` (a newer one reached the store directly)."""
        with self._lock:
            self._conn.execute("delete from spooled_writes where key = ?", (key,))

    def pending(self) -> int:
        with self._lock:
            return self._conn.execute("select count(*) from spooled_writes").fetchone()[0]

    def close(self) -> None:
        with self._lock:
            self._conn.close()


def _write(row: tuple) -> SpooledWrite:
    id_, key, op, value, ttl, user_id, metadata, written_at = row
    return SpooledWrite(id_, key, op, value, ttl, user_id, None if metadata is None else json.loads(metadata), written_at)
