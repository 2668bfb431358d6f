"""Reading a thread's row in SQL, to check what a test did to the store itself, not through the library."""

from __future__ import annotations

from typing import Any

import psycopg


def thread_row(source: Any, key: str, *columns: str) -> Any:
    """The row of thread ``key`` in ``public.conversation_threads``, or None if there is none.

    ``source`` is an open connection, or anything whose ``connect()`` opens
    one (a server, a store of tests/support/outages.py, a LocalSupabase).
    With one column (``conversation_data`` by default) its value is returned,
    else a tuple of them.
    """
    columns = columns or ("conversation_data",)
    query = f"select {', '.join(columns)} from public.conversation_threads where thread_id = %s"
    if isinstance(source, psycopg.Connection):
        row = source.execute(query, (key,)).fetchone()
    else:
        with source.connect() as conn:
            row = conn.execute(query, (key,)).fetchone()
    if row is None:
        return None
    return row[0] if len(columns) == 1 else tuple(row)
