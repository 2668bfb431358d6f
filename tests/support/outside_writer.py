"""What the world does to a store's database without the library: an operator's SQL, a backup, a restore."""

from __future__ import annotations

import psycopg
from psycopg.types.json import Jsonb

_TABLES = ("conversation_threads", "conversation_thread_tombstones")


class OutsideWriter:
    """An operator's session on the database behind a store (Supabase's SQL editor, psql).

    :meth:`backup` and :meth:`restore` act on the threads whose key starts
    with a prefix, and on the version sequence, as a restored file copy or a
    point-in-time recovery would: rows come back as they were, versions
    included, and the sequence at its old value.
    """

    def __init__(self, conn: psycopg.Connection) -> None:
        self.conn = conn
        self._backups: dict[str, tuple[dict[str, list], tuple | None]] = {}

    def edit(self, key: str, mark: int) -> None:
        """An edit in the SQL editor: one field of the document changed in place."""
        self.conn.execute(
            "update public.conversation_threads set conversation_data = "
            "jsonb_set(conversation_data, '{edited}', to_jsonb(%s::int)) where thread_id = %s",
            (mark, key),
        )

    def backup(self, prefix: str) -> None:
        rows = {
            table: self.conn.execute(
                f"select to_jsonb(t) from public.{table} t where t.thread_id like %s", (prefix + "%",)
            ).fetchall()
            for table in _TABLES
        }
        self._backups[prefix] = (rows, self._sequence())

    def restore(self, prefix: str) -> None:
        rows, sequence = self._backups[prefix]
        with self.conn.transaction():
            for table in _TABLES:
                self.conn.execute(f"delete from public.{table} where thread_id like %s", (prefix + "%",))
                for (row,) in rows[table]:
                    self.conn.execute(
                        f"insert into public.{table} select * from jsonb_populate_record(null::public.{table}, %s)",
                        (Jsonb(row),),
                    )
            if sequence is not None:
                self.conn.execute("select setval('public.conversation_thread_versions', %s, %s)", sequence)

    def _sequence(self) -> tuple | None:
        if self.conn.execute("select to_regclass('public.conversation_thread_versions')").fetchone()[0] is None:
            return None
        return self.conn.execute("select last_value, is_called from public.conversation_thread_versions").fetchone()
