"""Conversation thread storage: the public entry point.

A drop-in for pal-mcp-server's ``utils/storage_backend.py``. Installed, the
package is ``conversation_storage`` (see ``__init__``)::

    from conversation_storage import get_storage_backend

    storage = get_storage_backend()
    storage.setex(f"thread:{thread_id}", ttl_seconds, context.model_dump_json())
    storage.get(f"thread:{thread_id}")

``CONVERSATION_STORAGE_BACKEND`` picks the backend: ``memory`` (default),
``sqlite``, ``postgres`` or ``supabase``. When the chosen persistent backend
cannot be used, :func:`get_storage` falls back to memory with a warning, or
raises when ``CONVERSATION_STORAGE_STRICT=true``. asyncio code uses
``await get_async_storage()``, which returns the async twin of the same backend.
"""

from __future__ import annotations

import asyncio
import threading
from typing import TYPE_CHECKING

from .backends.async_adapters import AsyncFailoverStorage, AsyncInMemoryStorage, AsyncSQLiteStorage
from .backends.memory_storage import InMemoryStorage
from .backends.sqlite_storage import SQLiteStorage
from .contract.async_base_storage import AsyncThreadStorage
from .contract.base_storage import ThreadStorage
from .contract.errors import (
    StorageClosedError,
    StorageConfigurationError,
    StorageConflictError,
    StorageError,
    StoragePermissionError,
    StorageSchemaError,
    StorageTypeError,
    StorageUnavailableError,
    StorageValueError,
)
from .failover.failover_storage import FailoverStorage
from .operations.backend_factory import create_async_storage, create_storage
from .operations.settings import Settings, load_settings

if TYPE_CHECKING:
    from .backends.postgres_storage import AsyncPostgresStorage, PostgresStorage
    from .backends.supabase_storage import AsyncSupabaseStorage, SupabaseStorage

__all__ = [
    "AsyncFailoverStorage",
    "AsyncInMemoryStorage",
    "AsyncPostgresStorage",
    "AsyncSQLiteStorage",
    "AsyncSupabaseStorage",
    "AsyncThreadStorage",
    "FailoverStorage",
    "InMemoryStorage",
    "PostgresStorage",
    "SQLiteStorage",
    "Settings",
    "StorageClosedError",
    "StorageConfigurationError",
    "StorageConflictError",
    "StorageError",
    "StoragePermissionError",
    "StorageSchemaError",
    "StorageTypeError",
    "StorageUnavailableError",
    "StorageValueError",
    "SupabaseStorage",
    "ThreadStorage",
    "create_async_storage",
    "create_storage",
    "get_async_storage",
    "get_storage",
    "get_storage_backend",
    "load_settings",
    "reset_async_storage",
    "reset_storage",
]

_instance: ThreadStorage | None = None
_instance_lock = threading.Lock()
_async_instance: AsyncThreadStorage | None = None
_async_lock: tuple[asyncio.AbstractEventLoop, asyncio.Lock] | None = None


def get_storage() -> ThreadStorage:
    """Return the process-wide storage, creating it from the environment on first use."""
    global _instance
    storage = _instance
    if storage is not None and not storage.closed:
        return storage
    with _instance_lock:
        if _instance is None or _instance.closed:
            _instance = create_storage()
        return _instance


#: pal-mcp-server's name for :func:`get_storage`.
get_storage_backend = get_storage


def reset_storage() -> None:
    """Close the process-wide storage; the next :func:`get_storage` reads the environment again."""
    global _instance
    with _instance_lock:
        storage, _instance = _instance, None
    if storage is not None:
        storage.close()


async def get_async_storage() -> AsyncThreadStorage:
    """The process-wide async storage, created from the environment on first use.

    Belongs to the event loop that first created it (its connections do).
    """
    global _async_instance
    storage = _async_instance
    if storage is not None and not storage.closed:
        return storage
    async with _loop_lock():
        if _async_instance is None or _async_instance.closed:
            _async_instance = await create_async_storage()
        return _async_instance


async def reset_async_storage() -> None:
    """Close the process-wide async storage; the next call reads the environment again."""
    global _async_instance
    storage, _async_instance = _async_instance, None
    if storage is not None:
        await storage.close()


def _loop_lock() -> asyncio.Lock:
    # An asyncio.Lock serves one event loop; make a new one for a new loop.
    global _async_lock
    loop = asyncio.get_running_loop()
    if _async_lock is None or _async_lock[0] is not loop:
        _async_lock = (loop, asyncio.Lock())
    return _async_lock[1]


LAZY_NAMES = {
    "SupabaseStorage": "backends.supabase_storage",
    "AsyncSupabaseStorage": "backends.supabase_storage",
    "PostgresStorage": "backends.postgres_storage",
    "AsyncPostgresStorage": "backends.postgres_storage",
}


def __getattr__(name: str):
    # The Supabase client and psycopg are imported on first use: they are slow
    # to import and a process needs at most one of them.
    if name in LAZY_NAMES:
        import importlib

        return getattr(importlib.import_module(f".{LAZY_NAMES[name]}", __package__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
