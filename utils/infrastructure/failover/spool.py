"""A durable queue of writes the remote store has not received yet.

An SQLite file (synchronous=FULL): a write is acknowledged to the daemon only
once it is on disk here, so it survives the daemon being killed. Each write
carries the time it was acknowledged on the server's clock as this process
estimated it (server_clock.py); the store's replay keeps a write only if
nothing newer reached the thread, so replay order does not matter for
correctness.

Several daemons on one machine may share a spool file. A replayer claims
entries before replaying them, so each is replayed once; the claim lapses
when its owner dies or after a lease, so a killed replayer's entries are
taken over. An owner is one open Spool, not a process id: it holds an
exclusive flock on a file of its own beside the spool for as long as it
lives, so a daemon restarted as PID 1 in a container does not take its dead
predecessor (PID 1 too) for alive. Claims live in a table of their own:
claiming rewrites a few small rows, never the spooled documents, so it
needs little room in the journal on a nearly full disk.

A spooled set that names no user (or metadata) carries over those of the
live set it follows in the spool, as the store keeps a live thread's: an
erase of that user then covers pal's next ``setex`` of the thread too, and
each spooled write stands on its own, so replaying the newest write of a key
makes the older ones obsolete whatever order daemons sharing the file
replay them in. "Newest" is by the time a write was acknowledged on the
server's clock, the order the store keeps too.

Every failure of the file (a full disk, an I/O error) raises
:class:`SpoolError`, a :class:`StorageUnavailableError`: a write that could
not be spooled was not acknowledged.

The file is created by the first spooled write, not when a daemon starts: a
store that never goes away leaves nothing behind (test runs included). A
file that already exists is opened at once, so a daemon finds and replays
what others left. Where none exists, opening only checks that one could be
created there, so that a daemon learns at startup, not during an outage,
that it has no failover.
"""

from __future__ import annotations

import errno
import fcntl
import json
import os
import sqlite3
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

from ..contract.errors import StorageUnavailableError

_T = TypeVar("_T")
#: For :meth:`Spool._run`: where no file exists, create it.
_CREATE: Any = object()

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
create table if not exists spool_meta (name text primary key, value text not null);
create table if not exists spool_claims (
    write_id      integer primary key,
    claimed_by    text not null,
    claimed_until real not null
);
-- Writes the store refused to order (older than its tombstone retention):
-- kept for an operator instead of being applied blindly or dropped.
create table if not exists set_aside_writes (
    id integer primary key, key text not null, op text not null, value text, ttl integer,
    user_id text, metadata text, written_at real not null, reason text not null, set_aside_at real not null
);
"""
#: A claim whose owner is alive lapses after this long (an owner stuck on a dead store).
CLAIM_LEASE_SECONDS = 120.0


class SpoolError(StorageUnavailableError):
    """The spool file could not be read or written (disk full, I/O error)."""


@dataclass(frozen=True)
class SpooledWrite:
    id: int
    key: str
    op: str
    value: str | None
    ttl: int | None
    user_id: str | None
    metadata: dict[str, Any] | None
    #: When it was acknowledged, on the server's clock (Unix time).
    written_at: float

    def expired(self, server_now: float) -> bool:
        return self.op == "set" and self.written_at + (self.ttl or 0) <= server_now


class Spool:
    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self.owner = f"{os.getpid()}-{os.urandom(8).hex()}"
        self._last_written_at = 0.0
        self._owners = self.path.with_name(self.path.name + ".owners")
        self._conn: sqlite3.Connection | None = None
        self._owner_fd: int | None = None
        # Remembered until the file exists: settings are no reason to create it.
        self._unwritten_meta: dict[str, str] = {}
        self._closed = False
        # One connection shared by the daemon's threads and the replayer.
        self._lock = threading.Lock()
        try:
            exists = self.path.exists()
            if not exists:
                _check_creatable(self.path)
        except OSError as exc:
            raise SpoolError(f"cannot open the failover spool {self.path}: {exc}") from exc
        if exists:
            self._open()

    def _open(self, failure: str | None = None) -> sqlite3.Connection:
        conn = None
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._owner_fd = _hold(self._owners, self.owner)
            conn = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False, timeout=30)
            # A rollback journal, kept at its largest size: a write-ahead log
            # would hold every spooled write until a checkpoint that a full
            # disk cannot complete, so nothing could be removed even after the
            # replay. This way removing replayed writes works on a full disk.
            conn.execute("pragma journal_mode = persist")
            conn.execute("pragma synchronous = full")
            conn.executescript(_SCHEMA)
            conn.executemany("insert into spool_meta (name, value) values (?, ?)"
                             " on conflict (name) do update set value = excluded.value",
                             self._unwritten_meta.items())
        except (OSError, sqlite3.Error) as exc:
            if conn is not None:
                conn.close()
            self._release_owner()
            raise SpoolError(f"{failure or f'cannot open the failover spool {self.path}'}: {exc}") from exc
        self._unwritten_meta.clear()
        self._conn = conn
        return conn

    def _run(self, what: str, work: Callable[[sqlite3.Connection], _T], *, if_absent: Any = _CREATE) -> _T:
        """``work`` on the file; ``if_absent``, when given, answers instead where no file exists yet."""
        with self._lock:
            if self._closed:
                raise SpoolError(f"the failover spool {self.path} could not {what}: it was closed")
            conn = self._conn
            if conn is None:
                if if_absent is not _CREATE and not self.path.exists():
                    return if_absent
                conn = self._open(f"the failover spool {self.path} could not be created to {what}")
            try:
                return work(conn)
            except sqlite3.Error as exc:
                raise SpoolError(f"the failover spool {self.path} could not {what}: {exc}") from exc

    # -- writing ---------------------------------------------------------------

    def append_set(self, key, ttl, value, user_id, metadata, written_at: float) -> None:
        self._append(key, "set", value, ttl, user_id, None if metadata is None else json.dumps(metadata), written_at)

    def append_delete(self, key: str, written_at: float) -> None:
        self._append(key, "delete", None, None, None, None, written_at)

    def _append(self, key, op, value, ttl, user_id, metadata, written_at: float) -> None:
        def insert(conn: sqlite3.Connection) -> None:
            # Strictly increasing within this process, so two writes of one key
            # in the same microsecond still replay in the order they were made.
            stamp = max(written_at, self._last_written_at + 1e-6)
            # One statement, so a daemon sharing the file cannot slip a write in between.
            conn.execute(
                "insert into spooled_writes (key, op, value, ttl, user_id, metadata, written_at)"
                " select ?1, ?2, ?3, ?4,"
                "        case when ?2 = 'set' then coalesce(?5, p.user_id) end,"
                "        case when ?2 = 'set' then coalesce(?6, p.metadata) end, ?7"
                "   from (select 1) left join (" + _LIVE_BEFORE + ") p on true",
                (key, op, value, ttl, user_id, metadata, stamp),
            )
            self._last_written_at = stamp

        self._run("store the write, which was NOT saved", insert)

    # -- reading ---------------------------------------------------------------

    def latest(self, key: str) -> SpooledWrite | None:
        """The newest spooled write of ``key``, if any."""
        row = self._run("be read", lambda c: c.execute(
            f"select {_COLUMNS} from spooled_writes where key = ? order by written_at desc limit 1", (key,)).fetchone(),
            if_absent=None)
        return _write(row) if row else None

    def after(self, write_id: int, limit: int) -> list[SpooledWrite]:
        """Up to ``limit`` writes following ``write_id``, oldest first, claimed or not."""
        rows = self._run("be read", lambda c: c.execute(
            f"select {_COLUMNS} from spooled_writes where id > ? order by id limit ?", (write_id, limit)).fetchall(),
            if_absent=[])
        return [_write(r) for r in rows]

    def pending(self) -> int:
        return self._run("be read", lambda c: c.execute("select count(*) from spooled_writes").fetchone()[0],
                         if_absent=0)

    # -- replaying -------------------------------------------------------------

    def claim(self, limit: int) -> list[SpooledWrite]:
        """Claim up to ``limit`` of the oldest writes nobody live is replaying; return them oldest first."""
        now = time.time()

        def take(conn: sqlite3.Connection) -> list[tuple]:
            owners = [r[0] for r in conn.execute(
                "select distinct claimed_by from spool_claims where claimed_until >= ? and claimed_by <> ?",
                (now, self.owner))]
            dead = [owner for owner in owners if not self._alive(owner)]
            with _transaction(conn):
                conn.execute("delete from spool_claims where claimed_until < ? or write_id not in"
                             " (select id from spooled_writes)", (now,))
                if dead:
                    conn.executemany("delete from spool_claims where claimed_by = ?", [(o,) for o in dead])
                rows = conn.execute(
                    f"select {_COLUMNS} from spooled_writes w"
                    f" where not exists (select 1 from spool_claims c where c.write_id = w.id and c.claimed_by <> ?)"
                    f" order by id limit ?", (self.owner, limit)).fetchall()
                conn.executemany(
                    "insert into spool_claims (write_id, claimed_by, claimed_until) values (?, ?, ?)"
                    " on conflict (write_id) do update set claimed_until = excluded.claimed_until",
                    [(row[0], self.owner, now + CLAIM_LEASE_SECONDS) for row in rows])
            for owner in dead:
                _forget_owner(self._owners, owner)
            return rows

        return [_write(r) for r in self._run("claim writes to replay", take, if_absent=[])]

    def holds(self, write_id: int) -> bool:
        """Whether this process still holds ``write_id`` (not replayed by another, nor made obsolete)."""
        return self._run("be read", lambda c: c.execute(
            "select 1 from spooled_writes w join spool_claims c on c.write_id = w.id"
            " where w.id = ? and c.claimed_by = ?", (write_id, self.owner)).fetchone()) is not None

    def remove(self, write: SpooledWrite) -> None:
        """Drop a replayed write and the key's older ones: the store now holds something at least as new."""
        # Their claims go with the next claim() sweep; holds() already ignores them.
        self._run("drop a replayed write", lambda c: c.execute(
            "delete from spooled_writes where key = ? and written_at <= ?", (write.key, write.written_at)))

    def discard(self, key: str) -> None:
        """Drop every spooled write of ``key`` (a newer one reached the store directly)."""
        self._run("drop obsolete writes", lambda c: c.execute("delete from spooled_writes where key = ?", (key,)),
                  if_absent=None)

    def _alive(self, owner: str) -> bool:
        return _held(self._owners, owner)

    def set_aside(self, write: SpooledWrite, reason: str) -> None:
        """Move a write the store cannot order into ``set_aside_writes``, for an operator."""
        def move(conn: sqlite3.Connection) -> None:
            with _transaction(conn):
                conn.execute(
                    "insert or replace into set_aside_writes select id, key, op, value, ttl, user_id, metadata,"
                    " written_at, ?, ? from spooled_writes where id = ?", (reason, time.time(), write.id))
                conn.execute("delete from spooled_writes where id = ?", (write.id,))

        self._run("set a write aside", move)

    # -- what the process remembers between runs ---------------------------------

    def read_meta(self, name: str) -> str | None:
        row = self._run("be read", lambda c: c.execute("select value from spool_meta where name = ?", (name,)).fetchone(),
                        if_absent=None)
        return row[0] if row else self._unwritten_meta.get(name)

    def write_meta(self, name: str, value: str) -> None:
        with self._lock:
            if self._conn is None and not self._closed and not self.path.exists():
                self._unwritten_meta[name] = value  # stored with the first spooled write
                return
        self._run("store its settings", lambda c: c.execute(
            "insert into spool_meta (name, value) values (?, ?)"
            " on conflict (name) do update set value = excluded.value", (name, value)))

    def close(self) -> None:
        with self._lock:
            self._closed = True
            if self._conn is not None:
                self._conn.close()
        self._release_owner()

    def _release_owner(self) -> None:
        fd = getattr(self, "_owner_fd", None)
        if fd is not None:
            self._owner_fd = None
            _forget_owner(self._owners, self.owner)
            os.close(fd)


_COLUMNS = "id, key, op, value, ttl, user_id, metadata, written_at"
#: The newest spooled write of key ?1, as p.user_id and p.metadata, if it is a set still live at time ?7.
_LIVE_BEFORE = ("select w.user_id, w.metadata from spooled_writes w where w.key = ?1 and w.op = 'set'"
                " and w.written_at + w.ttl > ?7 and w.written_at = (select max(l.written_at) from spooled_writes l"
                " where l.key = ?1)")


def _write(row: tuple) -> SpooledWrite:
    id_, key, op, value, ttl, user_id, metadata, written_at = row
    return SpooledWrite(id_, key, op, value, ttl, user_id, None if metadata is None else json.loads(metadata), written_at)


@contextmanager
def _transaction(conn: sqlite3.Connection) -> Iterator[None]:
    conn.execute("begin immediate")
    try:
        yield
    except BaseException:
        if conn.in_transaction:
            conn.execute("rollback")
        raise
    conn.execute("commit")


def _check_creatable(path: Path) -> None:
    """Raise OSError unless ``path`` could be created, without creating anything.

    Its nearest existing ancestor must be a directory this process may add
    entries to; the directories below it are made with the file.
    """
    ancestor = path.parent
    while not ancestor.exists():
        ancestor = ancestor.parent
    if not ancestor.is_dir():
        raise NotADirectoryError(errno.ENOTDIR, "not a directory", str(ancestor))
    if not os.access(ancestor, os.W_OK | os.X_OK, effective_ids=os.access in os.supports_effective_ids):
        raise PermissionError(errno.EACCES, "no permission to create files in", str(ancestor))


def _hold(directory: Path, owner: str) -> int:
    """Create ``owner``'s file and hold an exclusive flock on it until closed (or the process dies)."""
    directory.mkdir(exist_ok=True)
    fd = os.open(directory / owner, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        os.close(fd)
        raise
    return fd


def _held(directory: Path, owner: str) -> bool:
    """Whether ``owner``'s flock is still held: flocks die with the open file, whatever the pid."""
    try:
        fd = os.open(directory / owner, os.O_RDONLY)
    except FileNotFoundError:
        return False
    except OSError:
        return True  # cannot tell: wait for the lease rather than replay twice
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except OSError:
        return True  # held (EWOULDBLOCK), or cannot tell: wait for the lease
    finally:
        os.close(fd)
    return False


def _forget_owner(directory: Path, owner: str) -> None:
    try:
        (directory / owner).unlink()
    except OSError:
        pass  # a leftover file only costs a lookup
