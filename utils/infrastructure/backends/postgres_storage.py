"""Threads in any PostgreSQL (Supabase's database included), over psycopg 3.

For daemons that reach the database directly. Each operation is one
statement calling the same SQL function the Supabase path calls, on a
connection from a pool: no lock of ours around queries, so concurrent
threads (or tasks) run concurrently, up to the pool's size.

Every call ends within ``statement_timeout`` plus a small grace, whatever
the server or a pooler in between does (call_deadline.py); a connection the
server closed while it sat in the pool (a restart) is dropped when taken,
before a call is sent on it.
"""

from __future__ import annotations

import json
import os
import re
import select
import time
import weakref
from dataclasses import dataclass
from typing import Any

import orjson
import psycopg
from psycopg.conninfo import conninfo_to_dict
from psycopg.types.json import Jsonb, set_json_loads
from psycopg_pool import AsyncConnectionPool, ConnectionPool, PoolTimeout

from ..contract.errors import StorageConfigurationError, StoragePermissionError, StorageUnavailableError
from ..remote.near_cache import NearCache, local_server
from ..remote.remote_calls import AsyncRemoteFunctionStorage, RemoteFunctionStorage
from .call_deadline import CallDeadlines
from .libpq_calls import ConnectionCalls, FunctionError, statement
from .sql_errors import error_for_code

#: Ports of transaction-mode poolers: Supabase's (Supavisor) and PgBouncer's default.
TRANSACTION_POOLER_PORTS = ("6543", "6432")
APPLICATION_NAME = "conversation-storage"


def grace_seconds(statement_timeout: float) -> float:
    """How long past statement_timeout the client waits: the server's own timeout answers first."""
    return min(1.0, 0.25 * statement_timeout)


def uses_transaction_pooler(dsn: str) -> bool:
    """True when ``dsn`` points at a transaction-mode pooler (port 6543 or 6432)."""
    try:
        return str(conninfo_to_dict(dsn).get("port", "")) in TRANSACTION_POOLER_PORTS
    except psycopg.ProgrammingError as exc:
        raise StorageConfigurationError(f"DATABASE_URL is not a valid connection string: {exc}") from None


def runs_locally(dsn: str) -> bool:
    """True when every host ``dsn`` names (libpq's default: a Unix socket, or PGHOST) is this machine."""
    try:
        info = conninfo_to_dict(dsn)
    except psycopg.ProgrammingError:
        return False
    hosts = str(info.get("hostaddr") or info.get("host") or os.environ.get("PGHOSTADDR")
                or os.environ.get("PGHOST") or "")
    return all(local_server(host) for host in hosts.split(","))


def connection_kwargs(
    *, transaction_pooler: bool, connect_timeout: float, statement_timeout: float
) -> dict[str, Any]:
    kwargs: dict[str, Any] = {
        "autocommit": True,
        "connect_timeout": max(1, round(connect_timeout)),
        "application_name": APPLICATION_NAME,
    }
    if transaction_pooler:
        # A transaction pooler hands each statement to any server connection,
        # where a prepared statement of another client may be missing or
        # clash; and it rejects startup options, so statement_timeout must
        # come from the role's settings on the server.
        kwargs["prepare_threshold"] = None
    else:
        kwargs["options"] = f"-c statement_timeout={int(statement_timeout * 1000)}"
    return kwargs


#: An integer orjson would read as a float (beyond 64 bits): metadata may hold one.
_LONG_INTEGER = re.compile(rb"[0-9]{20}")


def _answer_loads(data: str | bytes) -> Any:
    """The JSON a function answered: with orjson, unless an integer it would round is in it.

    psycopg's own loader (json.loads) cost about 20 µs of a set's client time
    here, as much as the rest of the call's Python; json.loads still reads
    what orjson would not read exactly.
    """
    raw = data.encode() if isinstance(data, str) else data  # psycopg hands bytes
    if _LONG_INTEGER.search(raw) is None:
        return orjson.loads(raw)
    return json.loads(raw)


def _reading_answers_with_orjson(cursor: psycopg.AsyncRawCursor) -> psycopg.AsyncRawCursor:
    set_json_loads(_answer_loads, cursor)
    return cursor


def _statement_and_params(function: str, params: dict[str, Any]) -> tuple[bytes, list[Any]]:
    values = [Jsonb(v) if isinstance(v, dict) else v for v in params.values()]
    return statement(function, tuple(params)), values


def _translated(exc: psycopg.Error, where: str, function: str) -> Exception:
    """The storage error for what psycopg or the pool raised.

    A function rather than a context manager: a generator-based one cost
    five more Python calls on every call.
    """
    if isinstance(exc, PoolTimeout):
        unsent = StorageUnavailableError(f"no connection to {where} for {function}: {exc}")
        unsent.may_run_later = False  # no connection, so nothing was sent
        return unsent
    if exc.sqlstate is None:
        return StorageUnavailableError(f"lost the connection to {where} during {function}: {exc}")
    message = exc.diag.message_primary or str(exc)
    return error_for_code(exc.sqlstate, message, operation=function, where=where)


def _broken(conn: psycopg.AsyncConnection) -> bool:
    """True when the server has closed (or written to) an idle connection (see ConnectionCalls.closed_by_server)."""
    if conn.closed:
        return True
    poller = select.poll()
    poller.register(conn.fileno(), select.POLLIN)
    return bool(poller.poll(0))


def _failing_to_connect(stats: dict[str, int]) -> bool:
    """No connection to hand out, and the pool's attempts to make one have failed."""
    return stats.get("pool_available", 0) == 0 and stats.get("connections_errors", 0) > 0


def _connect_failure(options: PoolOptions, where: str, exc: PoolTimeout) -> Exception:
    """Why the pool has no connection: it only logs the cause, so connect once more to learn it.

    Runs only when a call found no connection and the pool has none at all,
    so it costs nothing while the pool works.
    """
    arguments = options.pool_arguments()
    try:
        with psycopg.connect(arguments["conninfo"], **arguments["kwargs"]):
            return exc  # it connects now: the pool was only slow
    except psycopg.Error as cause:
        return _explained(where, exc, cause)


async def _aconnect_failure(options: PoolOptions, where: str, exc: PoolTimeout) -> Exception:
    arguments = options.pool_arguments()
    try:
        async with await psycopg.AsyncConnection.connect(arguments["conninfo"], **arguments["kwargs"]):
            return exc
    except psycopg.Error as cause:
        return _explained(where, exc, cause)


#: The server refused who connected, not how: libpq gives these no SQLSTATE, only the text.
_REFUSED_LOGIN = re.compile(
    r'authentication failed|no pg_hba\.conf entry|role "[^"]*" does not exist|no password supplied')


def _explained(where: str, exc: PoolTimeout, cause: psycopg.Error) -> Exception:
    text = str(cause).strip()
    if _REFUSED_LOGIN.search(text):
        # Not an outage: waiting or spooling cannot help, the connection string must change.
        return StoragePermissionError(f"{where} refused the login: {text}; check the user and password in the "
                                      "connection string (DATABASE_URL)")
    if "unsupported startup parameter" in text:
        return StorageConfigurationError(
            f"the server at {where} refused a connection setting ({text}): it is a transaction pooler, which "
            "takes no startup options; set CONVERSATION_POSTGRES_TRANSACTION_POOLER=true "
            "(PostgresStorage(..., transaction_pooler=True))")
    unsent = StorageUnavailableError(f"no connection to {where}: {exc}; the last attempt said: {text}")
    unsent.may_run_later = False
    return unsent


def _no_answer(where: str, function: str, seconds: float) -> StorageUnavailableError:
    return StorageUnavailableError(f"{where} did not answer {function} within {seconds:g} s; the call was abandoned")


def _where(dsn: str) -> str:
    try:
        info = conninfo_to_dict(dsn)
    except psycopg.ProgrammingError:
        return "Postgres"
    return f"Postgres at {info.get('host', 'localhost')}:{info.get('port', 5432)}/{info.get('dbname', '')}"


@dataclass(frozen=True)
class PoolOptions:
    """How to reach the database; the same for the sync and the async pool."""

    dsn: str
    min_size: int = 1
    max_size: int = 10
    connect_timeout: float = 5.0
    statement_timeout: float = 10.0
    #: None: decide from the port (6543: Supabase's transaction pooler; 6432: PgBouncer's).
    transaction_pooler: bool | None = None

    @property
    def call_seconds(self) -> float:
        """The most a call takes, waiting for a connection included."""
        return self.statement_timeout + grace_seconds(self.statement_timeout)

    @property
    def behind_transaction_pooler(self) -> bool:
        if self.transaction_pooler is None:
            return uses_transaction_pooler(self.dsn)
        return self.transaction_pooler

    def pool_arguments(self) -> dict[str, Any]:
        return {
            "conninfo": self.dsn,
            "min_size": self.min_size,
            "max_size": self.max_size,
            # A call waits at most this long for a connection, so an
            # unreachable server fails calls quickly rather than startup.
            "timeout": self.connect_timeout,
            "kwargs": connection_kwargs(
                transaction_pooler=self.behind_transaction_pooler,
                connect_timeout=self.connect_timeout,
                statement_timeout=self.statement_timeout,
            ),
            "open": False,
            "name": APPLICATION_NAME,
        }


class PostgresStorage(RemoteFunctionStorage):
    """Storage in ``public.conversation_threads`` through a psycopg connection pool.

    ``options`` are the fields of :class:`PoolOptions` after the DSN.
    """

    backend_name = "postgres"
    persistent = True

    def __init__(self, dsn: str, *, max_value_bytes: int | None = None, near_cache: bool | NearCache | None = None,
                 **options: Any) -> None:
        super().__init__(max_value_bytes=max_value_bytes, near_cache=near_cache, local_server=runs_locally(dsn))
        pool_options = PoolOptions(dsn, **options)
        self.transaction_pooler = pool_options.behind_transaction_pooler
        self._call_seconds = pool_options.call_seconds
        # An unreachable server fails a call quickly, without using up its whole budget.
        self._connect_seconds = pool_options.connect_timeout
        # After a call gave up, the server may still run it: a stopped server
        # resumes, a pooler dequeues it. Writes with a deadline refuse to.
        self.late_start_seconds = self._call_seconds
        self.url = _where(dsn)
        self._pool_options = pool_options
        self._pool = ConnectionPool(**pool_options.pool_arguments())
        # One per connection: its prepared statements live as long as it does.
        self._calls: weakref.WeakKeyDictionary[psycopg.Connection, ConnectionCalls] = weakref.WeakKeyDictionary()
        self._deadlines = CallDeadlines()
        self._pool.open(wait=False)  # connect in the background

    def _call(self, function: str, params: dict[str, Any]) -> Any:
        sql = statement(function, tuple(params))
        deadline = time.monotonic() + self._call_seconds
        try:
            # getconn/putconn rather than the pool's context manager, which
            # also enters the connection's own (a commit check per call);
            # with autocommit there is nothing to commit, and putconn still
            # discards a broken connection.
            conn, calls = self._open_connection(deadline)
            watch = self._deadlines.start(conn.fileno(), deadline)
            try:
                return calls.call(sql, list(params.values()))
            except (psycopg.OperationalError, FunctionError) as exc:
                if self._deadlines.finish(watch):
                    raise _no_answer(self.url, function, self._call_seconds) from exc
                raise
            finally:
                self._deadlines.finish(watch)
                self._pool.putconn(conn)
        except FunctionError as exc:
            raise error_for_code(exc.sqlstate, exc.message, operation=function, where=self.url) from exc
        except psycopg.Error as exc:
            raise _translated(exc, self.url, function) from exc

    def _open_connection(self, deadline: float) -> tuple[psycopg.Connection, ConnectionCalls]:
        while True:
            try:
                conn = self._pool.getconn(
                    timeout=min(self._connect_seconds, max(deadline - time.monotonic(), 0.001)))
            except PoolTimeout as exc:
                if not _failing_to_connect(self._pool.get_stats()):
                    raise
                raise _connect_failure(self._pool_options, self.url, exc) from exc
            if not conn.closed:  # before ConnectionCalls reads its socket
                calls = self._calls.get(conn)
                if calls is None:
                    calls = self._calls[conn] = ConnectionCalls(conn, _answer_loads)
                if not calls.closed_by_server():
                    return conn, calls
            conn.close()  # the pool replaces a closed connection
            self._pool.putconn(conn)

    def _close(self) -> None:
        self._deadlines.close()
        self._pool.close()


class AsyncPostgresStorage(AsyncRemoteFunctionStorage):
    """The asyncio twin of :class:`PostgresStorage` (psycopg's AsyncConnectionPool).

    Create it with ``await AsyncPostgresStorage.create(dsn, ...)``.
    """

    backend_name = "postgres"
    persistent = True

    def __init__(self, pool_options: PoolOptions, pool: AsyncConnectionPool, *, max_value_bytes=None,
                 near_cache: bool | NearCache | None = None):
        super().__init__(max_value_bytes=max_value_bytes, near_cache=near_cache,
                         local_server=runs_locally(pool_options.dsn))
        self._pool = pool
        self._cursors: weakref.WeakKeyDictionary[psycopg.AsyncConnection, psycopg.AsyncRawCursor] = (
            weakref.WeakKeyDictionary())
        self.url = _where(pool_options.dsn)
        self.transaction_pooler = pool_options.behind_transaction_pooler
        self._call_seconds = pool_options.call_seconds
        # An unreachable server fails a call quickly, without using up its whole budget.
        self._connect_seconds = pool_options.connect_timeout
        self._pool_options = pool_options
        self._deadlines = CallDeadlines()

    @classmethod
    async def create(cls, dsn: str, *, max_value_bytes: int | None = None, near_cache: bool | NearCache | None = None,
                     **options: Any) -> AsyncPostgresStorage:
        pool_options = PoolOptions(dsn, **options)
        pool = AsyncConnectionPool(**pool_options.pool_arguments())
        await pool.open(wait=False)  # connect in the background
        return cls(pool_options, pool, max_value_bytes=max_value_bytes, near_cache=near_cache)

    async def _call(self, function: str, params: dict[str, Any]) -> Any:
        statement, values = _statement_and_params(function, params)
        deadline = time.monotonic() + self._call_seconds
        try:
            conn = await self._open_connection(deadline)
            watch = self._deadlines.start(conn.fileno(), deadline)
            try:
                cursor = self._cursors.get(conn)
                if cursor is None:
                    # A raw cursor: the statement's placeholders are $1, $2, ... (libpq_calls.statement).
                    cursor = self._cursors[conn] = _reading_answers_with_orjson(psycopg.AsyncRawCursor(conn))
                await cursor.execute(statement, values)
                row = await cursor.fetchone()
            except psycopg.OperationalError as exc:
                if self._deadlines.finish(watch):
                    raise _no_answer(self.url, function, self._call_seconds) from exc
                raise
            finally:
                self._deadlines.finish(watch)
                await self._pool.putconn(conn)
        except psycopg.Error as exc:
            raise _translated(exc, self.url, function) from exc
        return None if row is None else row[0]

    async def _open_connection(self, deadline: float) -> psycopg.AsyncConnection:
        while True:
            try:
                conn = await self._pool.getconn(
                    timeout=min(self._connect_seconds, max(deadline - time.monotonic(), 0.001)))
            except PoolTimeout as exc:
                if not _failing_to_connect(self._pool.get_stats()):
                    raise
                raise await _aconnect_failure(self._pool_options, self.url, exc) from exc
            if not _broken(conn):
                return conn
            await conn.close()
            await self._pool.putconn(conn)

    async def _close(self) -> None:
        self._deadlines.close()
        await self._pool.close()
