"""Conversation thread storage: the public entry point.

A drop-in for pal-mcp-server's ``utils/storage_backend.py``::

    from utils.infrastructure.storage_backend import get_storage_backend

    storage = get_storage_backend()
    storage.setex(f"thread:{thread_id}", ttl_seconds, context.model_dump_json())
    storage.get(f"thread:{thread_id}")

``CONVERSATION_STORAGE_BACKEND`` picks the backend (``memory`` by default,
``supabase`` for threads that survive restarts). When the chosen persistent
backend cannot be used, :func:`get_storage` falls back to memory with a
warning, or raises when ``CONVERSATION_STORAGE_STRICT=true``.
"""

from __future__ import annotations

import logging
import threading
from typing import TYPE_CHECKING

from .base_storage import ThreadStorage
from .errors import (
    StorageClosedError,
    StorageConfigurationError,
    StorageError,
    StoragePermissionError,
    StorageSchemaError,
    StorageTypeError,
    StorageUnavailableError,
    StorageValueError,
)
from .memory_storage import InMemoryStorage
from .settings import Settings, load_settings

if TYPE_CHECKING:
    from .supabase_storage import SupabaseStorage

__all__ = [
    "InMemoryStorage",
    "Settings",
    "StorageClosedError",
    "StorageConfigurationError",
    "StorageError",
    "StoragePermissionError",
    "StorageSchemaError",
    "StorageTypeError",
    "StorageUnavailableError",
    "StorageValueError",
    "SupabaseStorage",
    "ThreadStorage",
    "create_storage",
    "get_storage",
    "get_storage_backend",
    "load_settings",
    "reset_storage",
]

logger = logging.getLogger(__name__)

_instance: ThreadStorage | None = None
_instance_lock = threading.Lock()


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


def create_storage(settings: Settings | None = None) -> ThreadStorage:
    """Build a new storage from ``settings`` (default: the environment)."""
    settings = settings or load_settings()
    if settings.backend == "memory":
        logger.warning(
            "conversation threads are kept in process memory "
            "(CONVERSATION_STORAGE_BACKEND=memory): they are lost when this process restarts"
        )
        return _memory(settings)
    try:
        storage = _open_persistent(settings)
    except StorageError as exc:
        if settings.strict:
            raise
        logger.warning(
            "conversation storage backend %r is unavailable: %s -- falling back to in-memory "
            "storage: conversation threads will NOT survive a restart of this process "
            "(set CONVERSATION_STORAGE_STRICT=true to fail instead)",
            settings.backend,
            exc,
        )
        return _memory(settings)
    logger.info(
        "conversation threads are stored persistently in %s (%s)",
        settings.backend,
        getattr(storage, "url", ""),
    )
    return storage


def _memory(settings: Settings) -> InMemoryStorage:
    # Sweep about ten times per conversation lifetime, within sane bounds.
    interval = min(600.0, max(60.0, settings.ttl_seconds / 10))
    return InMemoryStorage(sweep_interval_seconds=interval, max_value_bytes=settings.max_value_bytes)


def _open_persistent(settings: Settings) -> ThreadStorage:
    from .supabase_storage import SupabaseStorage

    missing = [
        name
        for name, value in (("SUPABASE_URL", settings.supabase_url), ("SUPABASE_KEY", settings.supabase_key))
        if not value
    ]
    if missing:
        raise StorageConfigurationError(
            f"CONVERSATION_STORAGE_BACKEND=supabase needs {' and '.join(missing)} "
            "(SUPABASE_SERVICE_ROLE_KEY is accepted for SUPABASE_KEY)"
        )
    storage = SupabaseStorage(
        settings.supabase_url,
        settings.supabase_key,
        timeout_seconds=settings.request_timeout_seconds,
        max_value_bytes=settings.max_value_bytes,
    )
    try:
        storage.health()
    except BaseException:
        storage.close()
        raise
    return storage


def __getattr__(name: str):
    # SupabaseStorage is imported on first use: the supabase client is slow to
    # import and memory-only users never need it.
    if name == "SupabaseStorage":
        from .supabase_storage import SupabaseStorage

        return SupabaseStorage
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
