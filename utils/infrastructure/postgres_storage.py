"""Threads in any PostgreSQL (Supabase's database included), over psycopg 3.

For daemons that reach the database directly. Each operation is one
statement calling the same SQL function the Supabase path calls, on a
connection from a pool: no lock of ours around queries, so concurrent
threads (or tasks) run concurrently, up to the pool's size.
"""

from __future__ import annotations

from contextlib import contextmanager
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


class PostgresStorage(RemoteFunctionStorage):
    """Storage in ``public.conversation_threads`` through a psycopg connection pool."""

    backend_name = "postgres"
    persistent = True

    def __init__(
        self,
        dsn: str,
        *,
        min_size: int = 1,
        max_size: int = 10,
        connect_timeout: float = 5.0,
        statement_timeout: float = 10.0,
        transaction_pooler: bool | None = None,
        max_value_bytes: int | None = None,
    ) -> None:
        super().__init__(max_value_bytes=max_value_bytes)
        self.transaction_pooler = uses_transaction_pooler(dsn) if transaction_pooler is None else transaction_pooler
        self.url = _where(dsn)
        self._pool = ConnectionPool(
            dsn,
            min_size=min_size,
            max_size=max_size,
            timeout=connect_timeout,
            kwargs=connection_kwargs(
                transaction_pooler=self.transaction_pooler,
                connect_timeout=connect_timeout,
                statement_timeout=statement_timeout,
            ),
            open=False,
            name=APPLICATION_NAME,
        )
        # Connections are made in the background; a call waits for one at most
        # connect_timeout, so an unreachable server fails calls, not startup.
        self._pool.open(wait=False)

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

    def __init__(self, pool: AsyncConnectionPool, url: str, transaction_pooler: bool, *, max_value_bytes=None):
        super().__init__(max_value_bytes=max_value_bytes)
        self._pool = pool
        self.url = url
        self.transaction_pooler = transaction_pooler

    @classmethod
    async def create(
        cls,
        dsn: str,
        *,
        min_size: int = 1,
        max_size: int = 10,
        connect_timeout: float = 5.0,
        statement_timeout: float = 10.0,
        transaction_pooler: bool | None = None,
        max_value_bytes: int | None = None,
    ) -> AsyncPostgresStorage:
        pooler = uses_transaction_pooler(dsn) if transaction_pooler is None else transaction_pooler
        pool = AsyncConnectionPool(
            dsn,
            min_size=min_size,
            max_size=max_size,
            timeout=connect_timeout,
            kwargs=connection_kwargs(
                transaction_pooler=pooler, connect_timeout=connect_timeout, statement_timeout=statement_timeout
            ),
            open=False,
            name=APPLICATION_NAME,
        )
        await pool.open(wait=False)
        return cls(pool, _where(dsn), pooler, max_value_bytes=max_value_bytes)

    async def _call(self, function: str, params: dict[str, Any]) -> Any:
        statement, adapted = _statement_and_params(function, params)
        with _translated_errors(self.url, function):
            async with self._pool.connection() as conn:
                cursor = await conn.execute(statement, adapted)
                return (await cursor.fetchone())[0]

    async def _close(self) -> None:
        await self._pool.close()
