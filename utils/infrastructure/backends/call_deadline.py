"""A deadline the client enforces on every call to Postgres, whatever sits in between.

``statement_timeout`` is enforced by the server, so it does nothing when the
server is stopped (SIGSTOP, a frozen VM) or when a transaction pooler drops
the startup option that sets it. A call would then wait as long as the
socket does. :class:`CallDeadlines` shuts down the socket of a call that
outlives its deadline: the blocked read returns at once, the call fails
with :class:`StorageUnavailableError`, and the pool discards the connection.

One watcher thread serves every call of a pool; a call only registers and
unregisters itself (a lock and a dict entry), so the bound costs about a
microsecond per call. The watcher sleeps until a call is in flight, then
looks every ``tick`` seconds: a call is cut at most ``tick`` after its
deadline.
"""

from __future__ import annotations

import itertools
import os
import socket
import threading
import time


class CallDeadlines:
    def __init__(self, *, tick: float = 0.05) -> None:
        self._tick = tick
        self._lock = threading.Lock()
        self._calls: dict[int, tuple[float, int]] = {}
        self._tokens = itertools.count()
        self._busy = threading.Event()
        self._closed = False
        self._watcher: threading.Thread | None = None

    def start(self, fileno: int, deadline: float) -> int:
        """Watch the call on socket ``fileno`` until ``deadline`` (``time.monotonic()``); return its token."""
        token = next(self._tokens)
        with self._lock:
            self._calls[token] = (deadline, fileno)
            if self._watcher is None and not self._closed:
                self._watcher = threading.Thread(target=self._watch, name="conversation-storage-deadlines",
                                                 daemon=True)
                self._watcher.start()
        if not self._busy.is_set():
            self._busy.set()
        return token

    def finish(self, token: int) -> bool:
        """Stop watching; True when the deadline passed and the call's socket was shut down."""
        with self._lock:
            return self._calls.pop(token, None) is None

    def close(self) -> None:
        with self._lock:
            self._closed = True
        self._busy.set()

    def _watch(self) -> None:
        while True:
            self._busy.wait()
            time.sleep(self._tick)
            now = time.monotonic()
            with self._lock:
                if self._closed:
                    return
                for token in [t for t, (deadline, _) in self._calls.items() if deadline <= now]:
                    _cut(self._calls.pop(token)[1])
                if not self._calls:
                    self._busy.clear()


def _cut(fileno: int) -> None:
    """Shut the socket down; its owner (libpq) keeps and closes its own descriptor."""
    try:
        copy = socket.socket(fileno=os.dup(fileno))
    except OSError:
        return  # already closed: the call is failing by itself
    try:
        copy.shutdown(socket.SHUT_RDWR)
    except OSError:
        pass
    finally:
        copy.close()

