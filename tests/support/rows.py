"""Reading a thread's row in SQL, to check what a test did to the store itself, not through the library."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import psycopg


def _query(source: Any, query: str, params: tuple) -> list[tuple]:
    if isinstance(source, psycopg.Connection):
        return source.execute(query, params).fetchall()
    with source.connect() as conn:
        return conn.execute(query, params).fetchall()


def thread_row(source: Any, key: str, *columns: str) -> Any:
    """The row of thread ``key`` in ``public.conversation_threads``, or None if there is none.

    ``source`` is an open connection, or anything whose ``connect()`` opens
    one (a server, a store of tests/support/outages.py, a LocalSupabase).
    With one column (``conversation_data`` by default) its value is returned,
    else a tuple of them.
    """
    columns = columns or ("conversation_data",)
    query = f"select {', '.join(columns)} from public.conversation_threads where thread_id = %s"
    rows = _query(source, query, (key,))
    if not rows:
        return None
    return rows[0][0] if len(columns) == 1 else tuple(rows[0])


def thread_rows(source: Any, keys: Iterable[str]) -> dict[str, Any]:
    """``{thread_id: conversation_data}`` of those of ``keys`` that have a row."""
    return dict(_query(source, "select thread_id, conversation_data from public.conversation_threads"
                               " where thread_id = any(%s)", (list(keys),)))


def has_lapsed(source: Any, key: str) -> bool:
    """Whether thread ``key``'s row is past its ``expires_at`` on the server's clock (the one expiry follows).

    A test waits for this instead of sleeping for the TTL: the server, not
    the test's clock, says when a thread has expired. False while there is
    no row. An open connection given as ``source`` must be in autocommit
    mode: in a transaction, ``now()`` stays at the transaction's start.
    """
    rows = _query(source, "select expires_at <= now() from public.conversation_threads where thread_id = %s",
                  (key,))
    return bool(rows) and rows[0][0]
