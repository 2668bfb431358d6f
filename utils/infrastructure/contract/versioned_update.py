"""Atomic read-modify-write on top of compare-and-set, shared by every backend.

pal's add_turn is get -> append -> setex: two concurrent turns on one thread
both read the same document and the second write drops the first's turn.
``update(key, fn, ttl)`` instead reads the thread with its version, applies
``fn`` and writes only if nobody wrote in between; otherwise it reads again
and retries, so every turn survives.
"""

from __future__ import annotations

import random
from collections.abc import Callable

from .errors import StorageConflictError
from .validation import check_value

#: Attempts before giving up; each failed one means another writer succeeded.
DEFAULT_MAX_ATTEMPTS = 100

Updater = Callable[[str | None], str]


def updated_value(fn: Updater, current: str | None, max_value_bytes: int) -> str:
    """``fn``'s new text for the thread, checked as a set checks its value."""
    value = fn(current)
    check_value(value, max_value_bytes)
    return value


def backoff_seconds(attempt: int) -> float:
    """Short randomised waits, so contending writers stop colliding in lockstep."""
    return random.uniform(0, min(0.05, 0.001 * 2**attempt))


def conflict(key: str, attempts: int) -> StorageConflictError:
    return StorageConflictError(
        f"update of {key} lost to concurrent writers {attempts} times in a row; nothing was written"
    )
