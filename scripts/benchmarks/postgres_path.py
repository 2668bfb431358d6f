#!/usr/bin/env python3
"""PostgresStorage against the same SQL typed by hand, in alternating rounds.

    python scripts/benchmarks/postgres_path.py            # about a minute
    python scripts/benchmarks/postgres_path.py --quick
    python scripts/benchmarks/postgres_path.py --cpu -1   # unpinned
    python scripts/benchmarks/postgres_path.py --runs 5   # on five fresh servers (~3 min)

Client, postmaster (hence the connection's backend) and redis run pinned to
one core (``--cpu``, default 0), as ``taskset`` would: on two cores the
scheduler otherwise puts a connection's server process on the client's core
(about 36 µs a round trip) or the other one (about 110 µs) for the
connection's life, and a slow placement inflates a baseline.

What the library adds on a get and a set of a 5 KB thread: each round times
every contender once, in turn, so drift of the machine (another process, the
CPU's clock) lands on all of them alike; a figure is the median of the
rounds' p50s. One server's figures drift from the next's (a raw select took
105 µs on one and 140 µs on another, and the ratios moved with it), so
``--runs`` measures on several fresh servers and reports the median ratio
and the range. Baselines, prepared, on the storage's own connection, fsync on:

- SELECT 1: the cost of any statement, the floor
- raw select: ``select conversation_data::text ... where thread_id = $1 and expires_at > now()``
- raw upsert: ``insert ... on conflict (thread_id) do update`` of the document and expiry
- raw upsert, all columns: thread_put's statement by hand (size, access and
  update times, version, the rules for created_at, user_id and metadata)
- redis-py GET / SET EX against a local redis-server (when installed)

PostgresStorage is measured with its near cache (the default: a get of a
thread it holds moves only the version) and without it.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from scripts.benchmarks.measure import time_calls
from tests.support.documents import document_of_size
from utils.infrastructure.backends.postgres_storage import PostgresStorage

RAW_SELECT = ("select conversation_data::text from public.conversation_threads"
              " where thread_id = %s and expires_at > now()")
RAW_UPSERT = ("insert into public.conversation_threads as t (thread_id, conversation_data, expires_at)"
              " values (%s, %s::jsonb, now() + make_interval(secs => %s))"
              " on conflict (thread_id) do update set conversation_data = excluded.conversation_data,"
              " expires_at = excluded.expires_at")
#: thread_put's statement (sql/012), typed by hand: every column the library keeps.
RAW_UPSERT_FULL = (
    "insert into public.conversation_threads as t"
    " (thread_id, user_id, conversation_data, size_bytes, expires_at, metadata)"
    " values (%s, null, %s::jsonb, octet_length(%s::text), now() + make_interval(secs => %s), '{}')"
    " on conflict (thread_id) do update set conversation_data = excluded.conversation_data,"
    " size_bytes = excluded.size_bytes, expires_at = excluded.expires_at, accessed_at = now(),"
    " updated_at = now(), version = excluded.version,"
    " created_at = case when t.expires_at > now() then t.created_at else now() end,"
    " user_id = case when t.expires_at > now() then t.user_id else null end,"
    " metadata = case when t.expires_at > now() then t.metadata else excluded.metadata end"
    " returning t.version, t.expires_at"
)
#: (what is measured, its baseline, the goal for the ratio or None) in the report.
GOALS = [
    ("raw select", "redis GET", None),
    ("SELECT 1", "redis GET", None),
    ("postgres get, near cache", "raw select", 1.25),
    ("postgres get, near cache", "redis GET", 1.0),
    ("postgres get, no cache", "raw select", 1.25),
    ("postgres get, no cache", "redis GET", 1.0),
    ("postgres set, near cache", "raw upsert", 1.25),
    ("postgres set, no cache", "raw upsert", 1.25),
    ("raw upsert, all columns", "raw upsert", None),
    ("postgres set, near cache", "raw upsert, all columns", None),
    ("postgres set, no cache", "raw upsert, all columns", None),
]


def measure(dsn: str, redis_port: int | None, rounds: int, calls: int) -> dict:
    """Median p50 (µs) of each contender over ``rounds`` alternating rounds.

    Everything Postgres runs on one connection, the storage's only one: on
    two cores a connection's latency depends on where the scheduler puts its
    server process (22 or 60 µs for a SELECT 1 here, for a connection's
    life), so contenders on different connections would compare placements.
    """
    doc = document_of_size(5_000)
    # The near cache asked for: for a server on loopback the default has none.
    storage = PostgresStorage(dsn, min_size=1, max_size=1, near_cache=True)
    cache = storage.near_cache
    storage.setex("thread:path-get", 3600, doc)

    def with_cache(on: bool, call):
        def timed(i: int):
            storage.near_cache = cache if on else None
            return call(i)
        return timed

    # The hand-typed SQL runs on the connection taken out of the pool for the
    # round, as a program holding one connection would.
    raw = {
        "SELECT 1": lambda conn: conn.execute("select 1", prepare=True).fetchone(),
        "raw select": lambda conn: conn.execute(RAW_SELECT, ("thread:path-get",), prepare=True).fetchone(),
        "raw upsert": lambda conn: conn.execute(RAW_UPSERT, ("thread:path-raw", doc, 3600), prepare=True),
        "raw upsert, all columns": lambda conn: conn.execute(
            RAW_UPSERT_FULL, ("thread:path-full", doc, doc, 3600), prepare=True).fetchone(),
    }
    contenders = {
        "postgres get, near cache": with_cache(True, lambda i: storage.get("thread:path-get")),
        "postgres get, no cache": with_cache(False, lambda i: storage.get("thread:path-get")),
        "postgres set, near cache": with_cache(True, lambda i: storage.setex("thread:path-cached", 3600, doc)),
        "postgres set, no cache": with_cache(False, lambda i: storage.setex("thread:path-plain", 3600, doc)),
    }
    if redis_port:
        import redis

        client = redis.Redis(port=redis_port)
        client.set("thread:path-get", doc)
        contenders["redis GET"] = lambda i: client.get("thread:path-get")
        contenders["redis SET EX"] = lambda i: client.set("thread:path-set", doc, ex=3600)
    p50s: dict[str, list[float]] = {name: [] for name in [*raw, *contenders]}
    for _ in range(rounds):
        conn = storage._pool.getconn()
        for name, statement in raw.items():
            p50s[name].append(statistics.median(time_calls(lambda i, statement=statement, conn=conn: statement(conn), calls, warmup=5)))
        storage._pool.putconn(conn)
        for name, call in contenders.items():
            p50s[name].append(statistics.median(time_calls(call, calls, warmup=5)))
    storage.near_cache = cache
    storage.close()
    return {name: round(statistics.median(values), 1) for name, values in p50s.items()}


def ratios(figures: dict) -> list[dict]:
    return [{"operation": name, "baseline": base, "ratio": round(figures[name] / figures[base], 2), "goal": goal}
            for name, base, goal in GOALS if name in figures and base in figures]


def markdown(figures: dict, runs: list[dict] | None = None) -> list[str]:
    """The figures; with several ``runs``, each ratio is the median of the runs' ratios, their range beside it."""
    lines = ["| operation | p50 µs |", "|---|---|"]
    lines += [f"| {name} | {value:,.1f} |" for name, value in figures.items()]
    per_run = [ratios(run) for run in runs or []]
    several = len(per_run) > 1
    lines += ["", "| operation | baseline | p50 ratio |" + (" runs |" if several else "") + " goal |",
              "|---|---|---|" + ("---|" if several else "") + "---|"]
    for i, r in enumerate(ratios(figures)):
        of_runs = sorted(run[i]["ratio"] for run in per_run)
        ratio = statistics.median(of_runs) if several else r["ratio"]
        spread = f" {of_runs[0]:.2f} to {of_runs[-1]:.2f} |" if several else ""
        goal = f"≤ {r['goal']:.2f}x" if r["goal"] else ""
        lines.append(f"| {r['operation']} | {r['baseline']} | {ratio:.2f}x |{spread} {goal} |")
    return lines


def main() -> int:
    from scripts.benchmarks.stack import Stack

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--cpu", type=int, default=0,
                        help="the core to pin this process, Postgres and redis to (-1: leave it to the scheduler)")
    parser.add_argument("--runs", type=int, default=1,
                        help="measure on this many fresh servers; figures and ratios are the runs' medians")
    args = parser.parse_args()
    runs = []
    for _ in range(args.runs):
        stack = Stack()
        try:
            if args.cpu >= 0:
                stack.pin({args.cpu})
            runs.append(measure(stack.dsn, stack.redis_port, 5 if args.quick else 15, 100 if args.quick else 400))
        finally:
            stack.close()
        if args.runs > 1:
            print(json.dumps(ratios(runs[-1])), flush=True)
    figures = {name: round(statistics.median(run[name] for run in runs), 1) for name in runs[0]}
    print("\n".join(markdown(figures, runs)))
    print(json.dumps(ratios(figures)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
