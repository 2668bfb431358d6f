"""Stops the servers a test run started when the run itself ends, however it ends.

PostgreSQL is started with ``pg_ctl``, which detaches it: a run killed by a
timeout's SIGTERM would leave it running, orphaned, with its port and data
directory, and so would pgbouncer and gateway subprocesses, which outlive
their parent. Each is registered here when it starts and unregistered when
it is stopped; at exit, or on SIGTERM, whatever is still registered is
stopped. Only the process that registered a server stops it: a forked child
exiting must not take its parent's servers down.
"""

from __future__ import annotations

import atexit
import itertools
import os
import signal
import subprocess
import sys
import threading
from collections.abc import Callable

_lock = threading.Lock()
_stoppers: dict[int, tuple[int, Callable[[], None]]] = {}
_tokens = itertools.count(1)
_installed_in: int | None = None


def register(stop: Callable[[], None]) -> int:
    """Have ``stop`` called when this process exits or is sent SIGTERM; returns a token for :func:`unregister`."""
    _install()
    with _lock:
        token = next(_tokens)
        _stoppers[token] = (os.getpid(), stop)
    return token


def unregister(token: int | None) -> None:
    if token is not None:
        with _lock:
            _stoppers.pop(token, None)


def register_process(process: subprocess.Popen) -> int:
    """Terminate ``process`` (then kill it) at exit unless it was unregistered first."""
    def stop() -> None:
        if process.poll() is None:
            process.terminate()
            try:
                process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                process.kill()
    return register(stop)


def stop_all() -> None:
    """Stop everything this process registered, newest first."""
    with _lock:
        mine = [(token, stop) for token, (pid, stop) in _stoppers.items() if pid == os.getpid()]
        for token, _ in mine:
            del _stoppers[token]
    for _, stop in reversed(mine):
        try:
            stop()
        except Exception as exc:  # noqa: BLE001 - one server that cannot be stopped must not spare the others
            sys.stderr.write(f"could not stop a server of the test run: {exc!r}\n")


def _on_sigterm(signum: int, frame: object) -> None:
    stop_all()
    # Then die of the signal as before, so the parent sees the same exit status.
    signal.signal(signum, signal.SIG_DFL)
    os.kill(os.getpid(), signum)


def _install() -> None:
    global _installed_in
    if _installed_in == os.getpid():
        return
    _installed_in = os.getpid()
    atexit.register(stop_all)
    # Only where nobody else handles SIGTERM, and only the main thread may set a handler.
    if threading.current_thread() is threading.main_thread() and signal.getsignal(signal.SIGTERM) == signal.SIG_DFL:
        signal.signal(signal.SIGTERM, _on_sigterm)
