#!/usr/bin/env python3
"""Operator calls on a 1,000,000-row table, through the Supabase path, against a baseline.

    python scripts/benchmarks/operator_calls.py               # every file of sql/ applied
    python scripts/benchmarks/operator_calls.py --upgrade-from 009_operator_scale.sql
        # the pre-release files before 009 applied (tests/support/legacy_sql), rows built
        # and measured; then today's sql/ applied
        # (timed, as on a live project) and everything measured again

On Supabase the API runs as service_role, which inherits authenticator's 8 s
statement_timeout: every call below must finish well inside it. The stack is
the test suite's Supabase stand-in (real Postgres with fsync on, Supabase's
roles and timeouts, the RPC gateway, the real supabase-py client). Each call
is timed end to end through SupabaseStorage; the baseline is a plain
``select count(*)`` of the table over psycopg, measured in the same run.
A call the server cancels is shown as failed with its error code.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

import psycopg

from tests.support.database import apply_sql, legacy_sql_files, sql_files
from tests.support.documents import document_of_size
from tests.support.local_supabase import LocalSupabase
from tests.support.postgres_server import PASSWORD
from utils.infrastructure.backends.postgres_storage import PostgresStorage
from utils.infrastructure.backends.supabase_storage import SupabaseStorage
from utils.infrastructure.contract.errors import StorageError

HEAVY_USER = "user-heavy"
TYPICAL_USER = "user-1500"

# Threads as pal writes them: a few KB of turns, ~30% without a user id (pal
# sets none), 10% one heavy user, the rest over `users` users with a skewed
# spread (user-0 has ~1.8% of them, user-2999 a handful). A 3-hour lifetime;
# a quarter expired 10 to 60 minutes ago and await cleanup, the rest were
# accessed in the last 150 minutes, so none expires during a run (counts stay
# comparable). Documents come from a pool of distinct ones, so each row costs
# a copy, not a JSON parse: a million rows take well under a minute.
POPULATE_SQL = """
create temporary table doc_pool on commit drop as
select n, jsonb_build_object(
           'thread_id', gen_random_uuid(), 'tool_name', 'chat', 'parent_thread_id', null,
           'turns', (select jsonb_agg(jsonb_build_object(
                         'role', case when t %% 2 = 0 then 'user' else 'assistant' end,
                         'content', (select string_agg(w[1 + (random() * 39 + 0 * k)::int], ' ')
                                       from generate_series(1, %(words)s + n %% (%(words)s / 2 + 1)) k),
                         'timestamp', now(), 'model_name', 'gpt-5'))
                       from generate_series(1, 2 + n %% 3) t)) as doc
  from generate_series(0, 499) n,
       (select string_to_array('the function returns a list of results while the caller expects one '
                               'value so the test fails intermittently under load because two threads '
                               'append to the same buffer without a lock review diff', ' ') as w) words;
insert into public.conversation_threads
    (id, thread_id, user_id, conversation_data, created_at, accessed_at, updated_at, expires_at, metadata{size_column})
select {id}, {key},
       case when i <= %(heavy)s then %(heavy_user)s
            when i %% 10 < 3 then null
            else 'user-' || floor(%(users)s * random() ^ 2)::int end,
       p.doc, g.accessed_at - interval '10 minutes', g.accessed_at, g.accessed_at,
       g.accessed_at + interval '3 hours',
       case when i %% 4 = 0 then '{{"tool": "codereview"}}'::jsonb else '{{}}'::jsonb end{size_value}
  from (select i, case when i %% 4 = 1 then now() - interval '190 minutes' - random() * interval '50 minutes'
                       else now() - random() * interval '150 minutes' end as accessed_at
          from generate_series(1, %(rows)s) i) g
  join doc_pool p on p.n = g.i %% 500;
"""
RANDOM_KEYS = {"id": "gen_random_uuid()", "key": "'thread:' || gen_random_uuid()"}
# Ascending keys land at the right edge of their indexes: twice as fast to load.
ASCENDING_KEYS = {"id": "('00000000-0000-4000-8000-' || lpad(to_hex(i), 12, '0'))::uuid",
                  "key": "'thread:' || lpad(i::text, 8, '0')"}


def populate(conn, rows: int, *, heavy: int, users: int = 3000, words: int = 160,
             random_keys: bool = True, vacuum: bool = True) -> None:
    """Insert ``rows`` threads as described above in one transaction, then vacuum (or just analyze).

    ``words`` per turn (up to 1.5 times that): 160 gives documents of 2 to
    6 KB. Keys are random uuids, as pal's, unless ``random_keys`` is false.
    Where the table has size_bytes (sql/009), rows get it as the write
    functions would set it. The vacuum stands in for autovacuum, which keeps
    a steady-state table's statistics and visibility map current.
    """
    has_size = conn.execute("select count(*) from pg_attribute where attrelid = 'public.conversation_threads'::regclass"
                            " and attname = 'size_bytes' and not attisdropped").fetchone()[0]
    statement = POPULATE_SQL.format(size_column=", size_bytes" if has_size else "",
                                    size_value=", octet_length(p.doc::text)" if has_size else "",
                                    **(RANDOM_KEYS if random_keys else ASCENDING_KEYS))
    with conn.transaction(), psycopg.ClientCursor(conn) as cur:  # client-side binding: two statements
        cur.execute(statement, {"rows": rows, "heavy": heavy, "heavy_user": HEAVY_USER,
                                "users": users, "words": words})
    conn.execute(f"{'vacuum (analyze)' if vacuum else 'analyze'} public.conversation_threads")


def timed(fn, runs: int, before=None, after=None) -> tuple[list[float], object]:
    """Seconds of ``fn()`` over ``runs`` runs (``before``/``after`` run untimed around each)."""
    samples, result = [], None
    for _ in range(runs):
        if before:
            before()
        started = time.perf_counter()
        try:
            result = fn()
        except StorageError as exc:
            result = exc
        samples.append(time.perf_counter() - started)
        if after:
            after()
    return samples, result


class Bench:
    def __init__(self, stack: LocalSupabase, runs: int) -> None:
        self.stack = stack
        self.runs = runs
        self.admin = stack.connect()
        # Longer than the server's 8 s, so a cancelled statement shows as such.
        self.storage = SupabaseStorage(stack.url, stack.secret_key, timeout_seconds=60)
        self.rows: list[tuple[str, str, list[float]]] = []
        self.errors: list[str] = []

    def add(self, call: str, samples: list[float], result) -> None:
        if isinstance(result, Exception):
            self.errors.append(f"{call}: {result}")
            rows = "FAILED"
        elif isinstance(result, dict):
            rows = f"{result['live'] + result['expired']:,}"
        elif isinstance(result, list):
            rows = f"{len(result):,}"
        else:
            rows = f"{int(result):,}"
        self.rows.append((call, rows, samples))

    def erase_restored(self, user: str):
        """delete_user_threads(user), with the user's rows put back after each run."""
        def save():
            self.admin.execute("drop table if exists saved_rows")
            self.admin.execute("create temporary table saved_rows as"
                               " select * from public.conversation_threads where user_id = %s", (user,))

        def restore():
            self.admin.execute("insert into public.conversation_threads select * from saved_rows"
                               " on conflict (thread_id) do nothing")
        batched = self.admin.execute(
            "select to_regprocedure('public.delete_user_threads_batch(text, integer)') is not null").fetchone()[0]
        if batched:
            erase = lambda: self.storage.delete_user_threads(user)
        else:  # what the library did before sql/009: one call, one statement
            erase = lambda: self.storage._call("delete_user_threads", {"p_user_id": user})
        return timed(erase, self.runs, save, restore)

    def operator_calls(self) -> None:
        runs, storage = self.runs, self.storage
        self.add("baseline: select count(*) (psycopg)", *timed(
            lambda: self.admin.execute("select count(*) from public.conversation_threads").fetchone()[0], runs))
        self.add("thread_stats", *timed(storage.stats, runs))
        self.add("thread_list (all users)", *timed(lambda: storage.list_threads(limit=50), runs))
        self.add(f"thread_list ({HEAVY_USER})", *timed(lambda: storage.list_threads(HEAVY_USER, 50), runs))
        self.add(f"thread_list ({TYPICAL_USER})", *timed(lambda: storage.list_threads(TYPICAL_USER, 50), runs))
        keys = [r[0] for r in self.admin.execute(
            "select thread_id from public.conversation_threads where expires_at > now() + interval '1 hour'"
            " limit %s", (runs,))]
        self.add("thread_touch", *timed(lambda: storage.touch(keys.pop(), 3600), runs))
        self.add("cleanup_expired_threads (batch of 1000)", *timed(lambda: storage.cleanup_expired(1000), runs))
        self.add(f"delete_user_threads ({TYPICAL_USER})", *self.erase_restored(TYPICAL_USER))
        self.add(f"delete_user_threads ({HEAVY_USER})", *self.erase_restored(HEAVY_USER))

    def hot_paths(self, documents: dict[str, str]) -> None:
        """set / get of one thread over psycopg: the calls 009 must not slow down."""
        dsn = self.stack.server.dsn_for("postgres", user="postgres", password=PASSWORD)
        with PostgresStorage(dsn, max_size=1) as pg:
            for label, document in documents.items():
                n = 1000 if len(document) < 100_000 else 100
                for op, fn in (("set", lambda doc=document: pg.setex("thread:hot", 3600, doc)),
                               ("get", lambda: pg.get("thread:hot"))):
                    fn()
                    self.rows.append((f"{op} {label} (postgres)", "-", timed(fn, n)[0]))

    def print(self, title: str) -> None:
        base = statistics.median(self.rows[0][2])
        print(f"\n{title}")
        print(f"{'call':42} {'rows':>10} {'p50 s':>9} {'max s':>9} {'p50/baseline':>13}")
        for call, rows, samples in self.rows:
            p50 = statistics.median(samples)
            ratio = f"{p50 / base:12.3f}x" if rows != "-" else ""  # hot paths compare before / after
            print(f"{call:42} {rows:>10} {p50:9.4f} {max(samples):9.4f} {ratio}")
        for error in self.errors:
            print(f"  {error}")
        self.rows, self.errors = [], []


def sizes(conn) -> str:
    heap, toast, indexes = conn.execute(
        "select pg_relation_size(c.oid), pg_relation_size(c.reltoastrelid), pg_indexes_size(c.oid)"
        " from pg_class c where c.oid = 'public.conversation_threads'::regclass").fetchone()
    return f"heap {heap / 2**20:,.0f} MB, toast {toast / 2**20:,.0f} MB, indexes {indexes / 2**20:,.0f} MB"


def upgrade(bench: Bench, files: list[Path]) -> None:
    """Apply ``files`` as the project owner, timed, then fill in the sizes 009 leaves unknown."""
    with bench.stack.connect_as_owner() as owner:
        print(f"\nbefore applying: {sizes(owner)}")
        for path in files:
            started = time.perf_counter()
            apply_sql(owner, [path])
            print(f"applied {path.name} in {time.perf_counter() - started:.2f} s; {sizes(owner)}")
        bench.admin.execute("select cron.unschedule(jobid) from cron.job where jobname = 'cleanup-expired-threads'")
        if not owner.execute("select to_regprocedure('public.thread_fill_sizes(integer)')").fetchone()[0]:
            return
        samples, result = timed(bench.storage.stats, 1)
        print(f"thread_stats before sizes are filled in: {samples[0]:.2f} s"
              + (f" ({str(result)[:90]})" if isinstance(result, Exception) else ""))
        batches, started = [], time.perf_counter()
        while True:
            t0 = time.perf_counter()
            filled = owner.execute("select public.thread_fill_sizes(5000)").fetchone()[0]
            batches.append(time.perf_counter() - t0)
            if filled == 0:
                break
        print(f"thread_fill_sizes(5000) until 0: {time.perf_counter() - started:.1f} s in {len(batches)} calls,"
              f" longest {max(batches):.2f} s; {sizes(owner)}")
    started = time.perf_counter()
    bench.admin.execute("vacuum (analyze) public.conversation_threads")  # what autovacuum does next
    print(f"vacuum (analyze) after the fill: {time.perf_counter() - started:.1f} s; {sizes(bench.admin)}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--heavy", type=int, default=100_000, help="threads of the heaviest user")
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--upgrade-from", metavar="FILE",
                        help="apply the pre-release files before FILE, measure, then apply today's sql/ and "
                             "measure again")
    args = parser.parse_args()
    first = legacy_sql_files(args.upgrade_from) if args.upgrade_from else sql_files()
    stack = LocalSupabase(durable=True, apply_schema=False)
    try:
        with stack.connect_as_owner() as owner:
            apply_sql(owner, first)
        bench = Bench(stack, args.runs)
        # The hourly pg_cron cleanup would change the expired share mid-run.
        bench.admin.execute("select cron.unschedule(jobid) from cron.job where jobname = 'cleanup-expired-threads'")
        started = time.perf_counter()
        populate(bench.admin, args.rows, heavy=args.heavy)
        print(f"built {args.rows:,} rows in {time.perf_counter() - started:.1f} s "
              f"(insert, vacuum, analyze); {sizes(bench.admin)}")
        sample = bench.admin.execute("select conversation_data::text from public.conversation_threads"
                                     " where octet_length(conversation_data::text) > 4000 limit 1").fetchone()[0]
        documents = {f"{len(sample) // 1000}KB": sample, "200KB": document_of_size(200_000)}
        bench.operator_calls()
        bench.hot_paths(documents)
        bench.print(f"sql/ up to {first[-1].name}, {args.rows:,} rows")
        if args.upgrade_from:
            upgrade(bench, sql_files())
            bench.operator_calls()
            bench.hot_paths(documents)
            bench.print("after applying today's sql/")
        bench.storage.close()
        bench.admin.close()
    finally:
        stack.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
