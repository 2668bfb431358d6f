#!/usr/bin/env python3
"""Cleanup of a large expired backlog, one function against another, with a reader running.

    python scripts/benchmarks/cleanup.py                       # 1,000,000 rows, batch 1000 and 10000
    python scripts/benchmarks/cleanup.py --compare be59d1d     # also the function as of that commit
    python scripts/benchmarks/cleanup.py --documents pal --rows 300000 --batch 1000

Starts a durable PostgreSQL (fsync on, full-page writes on) through the test
harness and builds the backlog once in a template database: ``--rows``
expired threads plus 1,000 live ones. Each run sweeps a fresh copy of it
(CREATE DATABASE ... TEMPLATE, which checkpoints, so every page's first
change writes a full-page image, as after any checkpoint) by calling the
function until a call returns less than the batch size, as
cleanup_until_done() does, while a reader gets live threads through
PostgresStorage without pause. Functions and batch sizes alternate round by
round, so the machine's other load falls on each alike.

Documents: ``small`` is what run.py's bench_cleanup writes ('{"turns": []}',
keys thread:old-N, one expiry for all); ``pal`` is a pool of 500 documents
of 2 to 6 KB of turns (stored compressed, about 3.3 KB of text on average), random uuid keys, 30% without a user and
expiries spread over the last hour.

Functions: ``now`` is public.cleanup_expired_threads as sql/ has it;
``--compare REV`` adds the one of sql/repeatable/40_operator_calls.sql at
REV, ``--pre-tombstones`` the one before tombstones
(fd7a012:sql/002_thread_functions.sql), which leaves none and is shown only
to explain the difference.
"""

from __future__ import annotations

import argparse
import re
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

import psycopg

from tests.support.database import apply_sql
from tests.support.postgres_server import PASSWORD, PostgresServer
from utils.infrastructure.backends.postgres_storage import PostgresStorage

PRE_TOMBSTONES = "fd7a012:sql/002_thread_functions.sql"
FUNCTION_FILE = "sql/repeatable/40_operator_calls.sql"

SMALL_SQL = """
insert into public.conversation_threads (thread_id, conversation_data, expires_at)
select 'thread:old-' || i, '{"turns": []}', now() - interval '1 minute' from generate_series(1, %(rows)s) i;
"""
PAL_SQL = """
create temporary table doc_pool on commit drop as
select n, jsonb_build_object(
           'thread_id', gen_random_uuid(), 'tool_name', 'chat', 'parent_thread_id', null,
           'turns', (select jsonb_agg(jsonb_build_object(
                         'role', case when t %% 2 = 0 then 'user' else 'assistant' end,
                         'content', (select string_agg(w[1 + (random() * 39 + 0 * k)::int], ' ')
                                       from generate_series(1, 160 + n %% 81) k),
                         'timestamp', now(), 'model_name', 'gpt-5'))
                       from generate_series(1, 2 + n %% 3) t)) as doc
  from generate_series(0, 499) n,
       (select string_to_array('the function returns a list of results while the caller expects one '
                               'value so the test fails intermittently under load because two threads '
                               'append to the same buffer without a lock review diff', ' ') as w) words;
insert into public.conversation_threads
    (thread_id, user_id, conversation_data, size_bytes, created_at, accessed_at, updated_at, expires_at)
select 'thread:' || gen_random_uuid(),
       case when i %% 10 < 3 then null else 'user-' || floor(3000 * random() ^ 2)::int end,
       p.doc, octet_length(p.doc::text), g.at - interval '3 hours', g.at - interval '3 hours',
       g.at - interval '3 hours', g.at
  from (select i, now() - interval '1 minute' - random() * interval '1 hour' as at
          from generate_series(1, %(rows)s) i) g
  join doc_pool p on p.n = g.i %% 500;
"""
LIVE_SQL = """
insert into public.conversation_threads (thread_id, conversation_data, expires_at)
select 'thread:live-' || i, '{"turns": []}', now() + interval '1 day' from generate_series(1, 1000) i;
"""


def function_at(spec: str, name: str) -> str:
    """public.cleanup_expired_threads as ``REV:PATH`` has it, renamed to ``name``."""
    text = subprocess.run(["git", "show", spec], cwd=ROOT, check=True, capture_output=True, text=True).stdout
    match = re.search(r"create or replace function public\.cleanup_expired_threads\(.*?\n\$\$;\n", text, re.DOTALL)
    if not match:
        raise SystemExit(f"no cleanup_expired_threads in {spec}")
    return match.group(0).replace("public.cleanup_expired_threads(", f"{name}(", 1)


def percentile(samples: list[float], q: float) -> float:
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, int(q / 100 * len(ordered)))]


def build_template(server: PostgresServer, documents: str, rows: int, setup: list[str]) -> None:
    with server.connect() as admin:
        admin.execute("create database backlog")
    with server.connect("backlog") as conn:
        apply_sql(conn)
        conn.execute("create schema bench")
        for sql in setup:
            conn.execute(sql)
        started = time.perf_counter()
        with conn.transaction(), psycopg.ClientCursor(conn) as cur:
            cur.execute(PAL_SQL if documents == "pal" else SMALL_SQL, {"rows": rows})
            cur.execute(LIVE_SQL)
        conn.execute("vacuum (analyze) public.conversation_threads")
        heap, toast, indexes = conn.execute(
            "select pg_relation_size(c.oid), pg_relation_size(c.reltoastrelid), pg_indexes_size(c.oid)"
            " from pg_class c where c.oid = 'public.conversation_threads'::regclass").fetchone()
        avg = conn.execute("select avg(octet_length(conversation_data::text))::int"
                           " from public.conversation_threads where expires_at <= now()").fetchone()[0]
        print(f"backlog: {rows:,} expired rows ({documents}, documents of {avg:,} bytes on average) + 1,000 live,"
              f" built in {time.perf_counter() - started:.0f} s; heap {heap / 2**20:,.0f} MB,"
              f" toast {toast / 2**20:,.0f} MB, indexes {indexes / 2**20:,.0f} MB", flush=True)


def sweep(server: PostgresServer, run: int, function: str, batch: int) -> dict:
    db = f"run{run}"
    with server.connect() as admin:
        admin.execute(f"create database {db} template backlog strategy file_copy")
    dsn = server.dsn_for(db, password=PASSWORD)
    reader = PostgresStorage(dsn, max_size=1)
    keys = [f"thread:live-{1 + i % 1000}" for i in range(1000)]
    idle = []
    for i in range(300):
        t0 = time.perf_counter()
        reader.get(keys[i % 1000])
        idle.append(time.perf_counter() - t0)
    during: list[float] = []
    done = threading.Event()

    def read() -> None:
        i = 0
        while not done.is_set():
            t0 = time.perf_counter()
            reader.get(keys[i % 1000])
            during.append(time.perf_counter() - t0)
            i += 1

    calls: list[float] = []
    deleted = 0
    with psycopg.connect(dsn, autocommit=True) as conn:
        wal_before = conn.execute("select pg_current_wal_lsn()").fetchone()[0]
        thread = threading.Thread(target=read, daemon=True)
        thread.start()
        statement = f"select {function}(%s)"
        started = time.perf_counter()
        try:
            while True:
                t0 = time.perf_counter()
                count = conn.execute(statement, (batch,), prepare=True).fetchone()[0]
                calls.append(time.perf_counter() - t0)
                deleted += count
                if count < batch:
                    break
            seconds = time.perf_counter() - started
        finally:
            done.set()
            thread.join()
        wal = conn.execute("select pg_wal_lsn_diff(pg_current_wal_lsn(), %s)", (wal_before,)).fetchone()[0]
        left = conn.execute("select count(*) from public.conversation_threads where expires_at <= now()").fetchone()[0]
        buried = conn.execute(
            "select (select count(*) from public.conversation_thread_tombstones)"
            " + (select coalesce(sum(cardinality(thread_ids)), 0) from public.conversation_thread_sweeps)").fetchone()[0]
    reader.close()
    with server.connect() as admin:
        admin.execute(f"drop database {db}")
    return {"function": function, "batch": batch, "deleted": deleted, "seconds": seconds,
            "rows_per_s": deleted / seconds, "calls": len(calls),
            "call_p50_ms": 1000 * percentile(calls, 50), "call_p99_ms": 1000 * percentile(calls, 99),
            "call_max_ms": 1000 * max(calls),
            "idle_p50_ms": 1000 * percentile(idle, 50), "idle_p99_ms": 1000 * percentile(idle, 99),
            "read_p50_ms": 1000 * percentile(during, 50), "read_p99_ms": 1000 * percentile(during, 99),
            "reads": len(during), "wal_mb": float(wal) / 2**20, "left": left, "recorded": buried}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--documents", choices=("small", "pal"), default="small")
    parser.add_argument("--batch", type=int, action="append", help="batch size (repeatable); default 1000 and 10000")
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--compare", metavar="REV", help=f"also run the function of {FUNCTION_FILE} at REV")
    parser.add_argument("--pre-tombstones", action="store_true", help=f"also run the function of {PRE_TOMBSTONES}")
    parser.add_argument("--functions", metavar="FILE", action="append",
                        help="SQL run before the backlog is built: functions bench.NAME(integer) in it are "
                             "candidates, run with the others (repeatable)")
    args = parser.parse_args()
    batches = args.batch or [1000, 10000]
    functions: list[str] = []
    setup: list[str] = []
    if args.pre_tombstones:
        functions.append("bench.cleanup_pre_tombstones")
        setup.append(function_at(PRE_TOMBSTONES, "bench.cleanup_pre_tombstones"))
    if args.compare:
        functions.append("bench.cleanup_at_rev")
        setup.append(function_at(f"{args.compare}:{FUNCTION_FILE}", "bench.cleanup_at_rev"))
    for path in args.functions or []:
        text = Path(path).read_text()
        functions += re.findall(r"create or replace function (bench\.\w+)\(", text)
        setup.append(text)
    functions.append("public.cleanup_expired_threads")
    server = PostgresServer(durable=True).start()
    results = []
    try:
        build_template(server, args.documents, args.rows, setup)
        run = 0
        for round_ in range(args.rounds):
            for batch in batches:
                for function in functions:
                    run += 1
                    r = sweep(server, run, function, batch)
                    results.append(r)
                    print(f"round {round_ + 1} {function:32} batch {batch:6}: {r['deleted']:,} rows in"
                          f" {r['seconds']:.2f} s = {r['rows_per_s']:,.0f} rows/s; {r['calls']} calls,"
                          f" p50 {r['call_p50_ms']:.1f} ms, p99 {r['call_p99_ms']:.1f} ms,"
                          f" max {r['call_max_ms']:.1f} ms; reader p50/p99 {r['read_p50_ms']:.2f}/"
                          f"{r['read_p99_ms']:.2f} ms (idle {r['idle_p50_ms']:.2f}/{r['idle_p99_ms']:.2f});"
                          f" WAL {r['wal_mb']:,.0f} MB; left {r['left']}, keys recorded {r['recorded']:,}",
                          flush=True)
    finally:
        server.cleanup()
    print("\nmedian over rounds; ratio = rows/s against public.cleanup_expired_threads, same batch size")
    for batch in batches:
        now = statistics.median(r["rows_per_s"] for r in results
                                if r["batch"] == batch and r["function"] == "public.cleanup_expired_threads")
        for function in functions:
            rs = [r for r in results if r["batch"] == batch and r["function"] == function]
            med = {k: statistics.median(r[k] for r in rs) for k in rs[0] if k not in ("function", "batch")}
            print(f"{function:32} batch {batch:6}: {med['rows_per_s']:9,.0f} rows/s ({med['rows_per_s'] / now:.2f}x),"
                  f" {med['seconds']:.2f} s, call p50 {med['call_p50_ms']:.1f} ms p99 {med['call_p99_ms']:.1f} ms,"
                  f" reader p50/p99 {med['read_p50_ms']:.2f}/{med['read_p99_ms']:.2f} ms"
                  f" (idle {med['idle_p50_ms']:.2f}/{med['idle_p99_ms']:.2f}), WAL {med['wal_mb']:,.0f} MB")
    return 0


if __name__ == "__main__":
    sys.exit(main())
