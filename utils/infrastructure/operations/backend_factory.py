"""Building a backend from :class:`Settings`, sync or async, with the memory fallback."""

from __future__ import annotations

import asyncio
import logging
import os
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import TYPE_CHECKING, TypeAlias, cast

from ..backends.async_adapters import AsyncFailoverStorage, AsyncInMemoryStorage, AsyncSQLiteStorage
from ..backends.memory_storage import InMemoryStorage
from ..contract.async_base_storage import AsyncThreadStorage
from ..contract.base_storage import ThreadStorage
from ..contract.errors import StorageConfigurationError, StorageError, StorageUnavailableError
from .settings import Settings, load_settings

if TYPE_CHECKING:
    from ..backends.sqlite_storage import SQLiteStorage
    from ..remote.remote_calls import AsyncRemoteFunctionStorage, RemoteFunctionStorage

#: What the openers give: a backend with a store of its own, so one that reports its health.
OpenedStorage: TypeAlias = "SQLiteStorage | RemoteFunctionStorage"
AsyncOpenedStorage: TypeAlias = "AsyncSQLiteStorage | AsyncRemoteFunctionStorage"

logger = logging.getLogger("conversation_storage")


def create_storage(settings: Settings | None = None) -> ThreadStorage:
    """Build a new storage from ``settings`` (default: the environment)."""
    settings = settings or load_settings()
    if settings.backend == "memory":
        _warn_memory()
        return _memory(settings)
    try:
        opened = _SYNC_OPENERS[settings.backend](settings)
        try:
            opened.health()
        except StorageUnavailableError as exc:
            if settings.strict or not (settings.failover and settings.backend in FAILOVER_BACKENDS):
                opened.close()
                raise
            return _with_failover(settings, opened, exc)
        except BaseException:
            opened.close()
            raise
        storage: ThreadStorage = opened
        if settings.failover and settings.backend in FAILOVER_BACKENDS:
            storage = _with_failover(settings, opened, None)
    except StorageError as exc:
        if settings.strict:
            raise
        _warn_fallback(settings, exc)
        return _memory(settings)
    _info_persistent(settings, storage)
    return storage


async def create_async_storage(settings: Settings | None = None) -> AsyncThreadStorage:
    """The asyncio twin of :func:`create_storage`."""
    settings = settings or load_settings()
    if settings.backend == "memory":
        _warn_memory()
        return AsyncInMemoryStorage(_memory(settings))
    if settings.failover and settings.backend in FAILOVER_BACKENDS:
        # The failover layer is one (threaded) implementation; run it off the loop.
        failover = await asyncio.to_thread(create_storage, settings)
        if isinstance(failover, InMemoryStorage):
            return AsyncInMemoryStorage(failover)
        # Any other storage create_storage gives a failover backend is that backend's class,
        # behind a FailoverStorage or not.
        return AsyncFailoverStorage(cast("RemoteFunctionStorage", failover))
    try:
        storage = await _ASYNC_OPENERS[settings.backend](settings)
        try:
            await storage.health()
        except BaseException:
            await storage.close()
            raise
    except StorageError as exc:
        if settings.strict:
            raise
        _warn_fallback(settings, exc)
        return AsyncInMemoryStorage(_memory(settings))
    _info_persistent(settings, storage)
    return storage


FAILOVER_BACKENDS = ("supabase", "postgres")


def default_spool_path(backend: str) -> Path:
    base = os.environ.get("XDG_DATA_HOME") or Path.home() / ".local" / "share"
    return Path(base) / "conversation-storage" / f"spool-{backend}.sqlite3"


def _with_failover(settings: Settings, primary, unavailable: StorageUnavailableError | None) -> ThreadStorage:
    from ..failover.failover_storage import FailoverStorage
    from ..failover.spool import Spool, SpoolError

    path = settings.spool_path or default_spool_path(settings.backend)
    try:
        spool = Spool(path)
    except SpoolError as exc:
        if settings.strict or unavailable is not None:
            # Nothing here could keep a write: strict mode raises, else the memory fallback.
            primary.close()
            raise exc if settings.strict or unavailable is None else unavailable from exc
        # The store answers: it keeps every acknowledged write, only the
        # failover is missing. Memory would lose them all at the next restart.
        logger.error(
            "conversation storage failover is OFF: %s. Threads are stored in %s, but while it is "
            "unreachable calls raise StorageUnavailableError instead of being spooled; free the disk or "
            "set CONVERSATION_SPOOL_PATH, then restart", exc, settings.backend,
        )
        primary.failover_error = str(exc)
        return primary
    storage = FailoverStorage(primary, spool, unavailable=unavailable)
    if unavailable is not None:
        logger.warning(
            "conversation storage backend %r is unreachable at startup (%s): running on the failover "
            "spool %s; threads written now are replayed to it when it is back",
            settings.backend, unavailable, spool.path,
        )
    return storage


def _memory(settings: Settings) -> InMemoryStorage:
    # Sweep about ten times per conversation lifetime, within sane bounds.
    interval = min(600.0, max(60.0, settings.ttl_seconds / 10))
    return InMemoryStorage(sweep_interval_seconds=interval, max_value_bytes=settings.max_value_bytes)


def _warn_memory() -> None:
    logger.warning(
        "conversation threads are kept in process memory "
        "(CONVERSATION_STORAGE_BACKEND=memory): they are lost when this process restarts"
    )


def _warn_fallback(settings: Settings, exc: StorageError) -> None:
    logger.warning(
        "conversation storage backend %r is unavailable: %s -- falling back to in-memory "
        "storage: conversation threads will NOT survive a restart of this process "
        "(set CONVERSATION_STORAGE_STRICT=true to fail instead)",
        settings.backend,
        exc,
    )


def _info_persistent(settings: Settings, storage: object) -> None:
    logger.info(
        "conversation threads are stored persistently in %s (%s)%s", settings.backend, getattr(storage, "url", ""),
        _local_cache_note(settings, storage),
    )


def _local_cache_note(settings: Settings, storage: object) -> str:
    """Why a remote store runs without its near cache when nobody said so: its server looks local."""
    store = getattr(storage, "primary", storage)  # behind the failover layer, or not
    if settings.near_cache is not None or getattr(store, "near_cache", "absent") is not None:
        return ""
    return ("; near cache off, as the server is on this machine (if that is a tunnel or a pooler in front of a "
            "server elsewhere, set CONVERSATION_NEAR_CACHE=true)")


def _require(settings: Settings, *names_values: tuple[str, str | None]) -> None:
    missing = [name for name, value in names_values if not value]
    if missing:
        raise StorageConfigurationError(
            f"CONVERSATION_STORAGE_BACKEND={settings.backend} needs {' and '.join(missing)}"
        )


def _supabase_args(settings: Settings) -> tuple[tuple[str, str], dict]:
    _require(settings, ("SUPABASE_URL", settings.supabase_url), ("SUPABASE_KEY (or SUPABASE_SERVICE_ROLE_KEY)", settings.supabase_key))
    # _require raised unless both are set, which the checker cannot see through it.
    return (settings.supabase_url, settings.supabase_key), {  # type: ignore[return-value]
        "timeout_seconds": settings.request_timeout_seconds,
        "max_value_bytes": settings.max_value_bytes,
        "near_cache": settings.near_cache,
    }


def _postgres_args(settings: Settings) -> tuple[tuple[str], dict]:
    _require(settings, ("DATABASE_URL (or SUPABASE_DB_URL)", settings.database_url))
    if settings.postgres_pool_min > settings.postgres_pool_max:
        raise StorageConfigurationError(
            "CONVERSATION_POSTGRES_POOL_MIN must not be larger than CONVERSATION_POSTGRES_POOL_MAX"
        )
    # _require raised unless it is set, which the checker cannot see through it.
    return (settings.database_url,), {  # type: ignore[return-value]
        "min_size": settings.postgres_pool_min,
        "max_size": settings.postgres_pool_max,
        "connect_timeout": min(settings.request_timeout_seconds, 5.0),
        "statement_timeout": settings.request_timeout_seconds,
        "transaction_pooler": settings.transaction_pooler,
        "max_value_bytes": settings.max_value_bytes,
        "near_cache": settings.near_cache,
    }


def _sqlite_args(settings: Settings) -> tuple[tuple, dict]:
    return (settings.sqlite_path,), {
        "synchronous": settings.sqlite_synchronous,
        "max_value_bytes": settings.max_value_bytes,
    }


def _open_supabase(settings: Settings) -> OpenedStorage:
    from ..backends.supabase_storage import SupabaseStorage  # the client is slow to import: only when used

    args, kwargs = _supabase_args(settings)
    return SupabaseStorage(*args, **kwargs)


def _open_postgres(settings: Settings) -> OpenedStorage:
    from ..backends.postgres_storage import PostgresStorage

    args, kwargs = _postgres_args(settings)
    return PostgresStorage(*args, **kwargs)


def _open_sqlite(settings: Settings) -> OpenedStorage:
    from ..backends.sqlite_storage import SQLiteStorage

    args, kwargs = _sqlite_args(settings)
    return SQLiteStorage(*args, **kwargs)


async def _open_async_supabase(settings: Settings) -> AsyncOpenedStorage:
    from ..backends.supabase_storage import AsyncSupabaseStorage

    args, kwargs = _supabase_args(settings)
    return await AsyncSupabaseStorage.create(*args, **kwargs)


async def _open_async_postgres(settings: Settings) -> AsyncOpenedStorage:
    from ..backends.postgres_storage import AsyncPostgresStorage

    args, kwargs = _postgres_args(settings)
    return await AsyncPostgresStorage.create(*args, **kwargs)


async def _open_async_sqlite(settings: Settings) -> AsyncOpenedStorage:
    args, kwargs = _sqlite_args(settings)
    return await AsyncSQLiteStorage.create(*args, **kwargs)


_SYNC_OPENERS: dict[str, Callable[[Settings], OpenedStorage]] = {
    "supabase": _open_supabase,
    "postgres": _open_postgres,
    "sqlite": _open_sqlite,
}
_ASYNC_OPENERS: dict[str, Callable[[Settings], Awaitable[AsyncOpenedStorage]]] = {
    "supabase": _open_async_supabase,
    "postgres": _open_async_postgres,
    "sqlite": _open_async_sqlite,
}
