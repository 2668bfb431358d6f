"""Threads in any PostgreSQL (Supabase's database included), over psycopg 3.

For daemons that reach the database directly. Each operation is one
statement calling the same SQL function the Supabase path calls, on a
connection from a pool: no lock of ours around queries, so concurrent
threads (or tasks) run concurrently, up to the pool's size.
"""

from __future__ import annotations

from contextlib import contextmanager
from dataclasses import dataclass
from functools import lru_cache
from typing import Any, Iterator

import psycopg
from psycopg import sql
from psycopg.conninfo import conninfo_to_dict
from psycopg.types.json import Jsonb
from psycopg_pool import AsyncConnectionPool, ConnectionPool, PoolTimeout

from .errors import StorageConfigurationError, StorageUnavailableError
from .remote_calls import AsyncRemoteFunctionStorage, RemoteFunctionStorage
from .sql_errors import error_for_code

#: Port of Supabase's transaction-mode pooler (Supavisor / PgBouncer).
TRANSACTION_POOLER_PORT = "6543"
APPLICATION_NAME = "conversation-storage"


def uses_transaction_pooler(dsn: str) -> bool:
    """True when ``dsn`` points at a transaction-mode pooler (port 6543)."""
    try:
        return str(conninfo_to_dict(dsn).get("port", "")) == TRANSACTION_POOLER_PORT
    except psycopg.ProgrammingError as exc:
        raise StorageConfigurationError(f"DATABASE_URL is not a valid connection string: {exc}") from None


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


@lru_cache(maxsize=64)
def _statement(function: str, names: tuple[str, ...]) -> sql.Composed:
    arguments = sql.SQL(", ").join(
        sql.SQL("{} => {}").format(sql.Identifier(name), sql.Placeholder(name)) for name in names
    )
    return sql.SQL("select public.{}({})").format(sql.Identifier(function), arguments)


def _statement_and_params(function: str, params: dict[str, Any]) -> tuple[sql.Composed, dict[str, Any]]:
    adapted = {k: Jsonb(v) if isinstance(v, dict) else v for k, v in params.items()}
    return _statement(function, tuple(params)), adapted


@contextmanager
def _translated_errors(where: str, function: str) -> Iterator[None]:
    try:
        yield
    except PoolTimeout as exc:
        raise StorageUnavailableError(f"no connection to {where} for {function}: {exc}") from exc
    except psycopg.Error as exc:
        if exc.sqlstate is None:
            raise StorageUnavailableError(f"lost the connection to {where} during {function}: {exc}") from exc
        message = exc.diag.message_primary or str(exc)
        raise error_for_code(exc.sqlstate, message, operation=function, where=where) from exc


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
    #: None: decide from the port (6543 is Supabase's transaction pooler).
    transaction_pooler: bool | None = None

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

    def __init__(self, dsn: str, *, max_value_bytes: int | None = None, **options: Any) -> None:
        super().__init__(max_value_bytes=max_value_bytes)
        pool_options = PoolOptions(dsn, **options)
        self.transaction_pooler = pool_options.behind_transaction_pooler
        # A session holds its connection: the server runs a statement when it
        # arrives. A transaction pooler may queue it, as long as a call waits.
        if self.transaction_pooler:
            self.late_start_seconds = pool_options.connect_timeout + pool_options.statement_timeout
        self.url = _where(dsn)
        self._pool = ConnectionPool(**pool_options.pool_arguments())
        self._pool.open(wait=False)  # connect in the background

    def _call(self, function: str, params: dict[str, Any]) -> Any:
        statement, adapted = _statement_and_params(function, params)
        with _translated_errors(self.url, function), self._pool.connection() as conn:
            return conn.execute(statement, adapted).fetchone()[0]

    def _close(self) -> None:
        self._pool.close()


class AsyncPostgresStorage(AsyncRemoteFunctionStorage):
    """The asyncio twin of :class:`PostgresStorage` (psycopg's AsyncConnectionPool).

    Create it with ``await AsyncPostgresStorage.create(dsn, ...)``.
    """

    backend_name = "postgres"
    persistent = True

    def __init__(self, pool_options: PoolOptions, pool: AsyncConnectionPool, *, max_value_bytes=None):
        super().__init__(max_value_bytes=max_value_bytes)
        self._pool = pool
        self.url = _where(pool_options.dsn)
        self.transaction_pooler = pool_options.behind_transaction_pooler

    @classmethod
    async def create(cls, dsn: str, *, max_value_bytes: int | None = None, **options: Any) -> AsyncPostgresStorage:
        pool_options = PoolOptions(dsn, **options)
        pool = AsyncConnectionPool(**pool_options.pool_arguments())
        await pool.open(wait=False)  # connect in the background
        return cls(pool_options, pool, max_value_bytes=max_value_bytes)

    async def _call(self, function: str, params: dict[str, Any]) -> Any:
        statement, adapted = _statement_and_params(function, params)
        with _translated_errors(self.url, function):
            async with self._pool.connection() as conn:
                cursor = await conn.execute(statement, adapted)
                return (await cursor.fetchone())[0]

    async def _close(self) -> None:
        await self._pool.close()
