"""Removing expired threads until the backlog is gone, one bounded batch at a time."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

from ..contract.base_storage import ThreadStorage

DEFAULT_BATCH_SIZE = 1000


@dataclass(frozen=True)
class CleanupResult:
    deleted: int
    batches: int
    seconds: float

    def to_json(self) -> dict[str, float | int]:
        return {"deleted": self.deleted, "batches": self.batches, "seconds": round(self.seconds, 3)}


def cleanup_until_done(
    storage: ThreadStorage,
    batch_size: int = DEFAULT_BATCH_SIZE,
    *,
    on_batch: Callable[[int, int], None] | None = None,
) -> CleanupResult:
    """Call ``cleanup_expired`` until a batch comes back short.

    Each batch is its own transaction, so locks stay short and a concurrent
    sweeper (pg_cron, another host) shares the work instead of waiting.
    ``on_batch(deleted_so_far, batches_so_far)`` is called after each batch.
    """
    started = time.monotonic()
    deleted = batches = 0
    while True:
        count = storage.cleanup_expired(batch_size)
        deleted += count
        batches += 1
        if on_batch is not None:
            on_batch(deleted, batches)
        if count < batch_size:
            return CleanupResult(deleted, batches, time.monotonic() - started)
