"""Waiting for something a test can observe, instead of sleeping and hoping it happened.

A fixed sleep is too short on a loaded machine and wasted time on an idle
one; a deadline only bounds how long a test hangs when the event never comes,
so it can be generous.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TypeVar

T = TypeVar("T")

#: Long enough that a loaded two-core runner never reaches it while the event is on its way.
DEADLINE_SECONDS = 60.0


def wait_until(condition: Callable[[], T], what: str, timeout: float = DEADLINE_SECONDS,
               interval: float = 0.01) -> T:
    """Return the first truthy answer of ``condition()``; fail naming ``what`` if none comes in time."""
    deadline = time.monotonic() + timeout
    while True:
        answer = condition()
        if answer:
            return answer
        if time.monotonic() >= deadline:
            raise AssertionError(f"gave up after {timeout:g} s waiting for {what}")
        time.sleep(interval)


def wait_until_answered(call: Callable[[], T], what: str, errors: tuple[type[BaseException], ...],
                        timeout: float = DEADLINE_SECONDS, interval: float = 0.1) -> T:
    """Return ``call()``'s first answer, calling again while it raises one of ``errors``.

    For a store coming back: its pool reconnects with a backoff, so the first
    calls after a restart may still fail. Any other error fails at once; if
    none answers in time, the last error is chained to the one that says so.
    """
    failures: list[BaseException] = []

    def attempt() -> tuple[T] | None:
        try:
            return (call(),)  # a tuple, so that an answer of None or 0 counts too
        except errors as exc:
            failures[:] = [exc]
            return None

    try:
        return wait_until(attempt, what, timeout, interval)[0]
    except AssertionError as gave_up:
        raise gave_up from (failures[0] if failures else None)
