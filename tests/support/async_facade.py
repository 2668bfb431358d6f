"""Run an async storage from synchronous test code, so one conformance suite
covers both faces of every backend."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Coroutine
from typing import Any, Self


class EventLoopThread:
    """An event loop running in a thread of its own; ``run`` waits for a coroutine's result.

    Several test threads may call ``run`` at once: their coroutines then
    interleave on the one loop, as tasks do in an asyncio daemon.
    """

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self.loop.run_forever, name="test-event-loop", daemon=True)
        self._thread.start()

    def run(self, coroutine: Coroutine[Any, Any, Any], timeout: float = 60.0) -> Any:
        return asyncio.run_coroutine_threadsafe(coroutine, self.loop).result(timeout)

    def stop(self) -> None:
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(timeout=10)
        self.loop.close()


class SyncFacade:
    """The synchronous interface, answered by an :class:`AsyncThreadStorage`."""

    _METHODS = (
        "set_with_ttl", "setex", "get", "delete", "cleanup_expired", "close", "shutdown", "health",
        "list_threads", "touch", "delete_user_threads", "stats", "update",
    )

    def __init__(self, storage, runner: EventLoopThread) -> None:
        self.async_storage = storage
        self._runner = runner

    def __getattr__(self, name: str):
        if name not in self._METHODS:
            return getattr(self.async_storage, name)

        def call(*args, **kwargs):
            return self._runner.run(getattr(self.async_storage, name)(*args, **kwargs))

        return call

    @property
    def max_value_bytes(self) -> int:
        return self.async_storage.max_value_bytes

    @max_value_bytes.setter
    def max_value_bytes(self, value: int) -> None:
        self.async_storage.max_value_bytes = value

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()
