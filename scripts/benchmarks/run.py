#!/usr/bin/env python3
"""Benchmark every backend against baselines and peers measured in the same run.

    python scripts/benchmarks/run.py --quick     # about a minute
    python scripts/benchmarks/run.py             # the full run
    python scripts/benchmarks/run.py --out DIR   # where report.md / chart.png go

Starts its own durable PostgreSQL (fsync on), the local RPC gateway as a
separate process (the Supabase path) and redis-server when installed. Every
figure is p50 / p90 / p99 latency and ops/s, with its ratio to the baseline
named beside it. Round trips per operation are counted
(on the wire through a counting proxy for Postgres, as gateway requests for
Supabase). Needs the test extra.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import threading
import time
from datetime import UTC, datetime
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

import psycopg

from scripts.benchmarks import postgres_path
from scripts.benchmarks.measure import Result, throughput, time_calls
from scripts.benchmarks.network_proxy import Profile, ShapingProxy
from scripts.benchmarks.postgres_path import RAW_SELECT, RAW_UPSERT
from scripts.benchmarks.report import print_table, write_chart, write_markdown
from scripts.benchmarks.stack import Stack, all_cpus
from tests.support.documents import document_of_size
from utils.infrastructure.backends.memory_storage import InMemoryStorage
from utils.infrastructure.backends.postgres_storage import PostgresStorage
from utils.infrastructure.backends.sqlite_storage import SQLiteStorage
from utils.infrastructure.backends.supabase_storage import SupabaseStorage
from utils.infrastructure.operations.cleanup import cleanup_until_done

SIZES = {"5KB": 5_000, "50KB": 50_000, "250KB": 250_000, "2MB": 2_000_000}


class LockedDict:
    """The floor for an in-process store: a dict behind a lock."""

    def __init__(self) -> None:
        self._data: dict[str, str] = {}
        self._lock = threading.Lock()

    def setex(self, key: str, ttl: int, value: str) -> None:
        with self._lock:
            self._data[key] = value

    def get(self, key: str) -> str | None:
        with self._lock:
            return self._data.get(key)


def calls_for(size: int, quick: bool) -> int:
    base = 200 if quick else 2000
    return max(10, min(base, base * 50_000 // max(size, 50_000)))


def bench_sizes(stack: Stack, backends: dict, quick: bool) -> list[Result]:
    results: list[Result] = []
    raw = psycopg.connect(stack.dsn, autocommit=True)
    redis_client = None
    if stack.redis_port:
        import redis

        redis_client = redis.Redis(port=stack.redis_port)
    for label, size in SIZES.items():
        n = calls_for(size, quick)
        doc = document_of_size(size)
        key = f"thread:bench-{label}"
        group = f"{label} document"
        floor = LockedDict()
        floor.setex(key, 3600, doc)
        results.append(Result(group, "dict+lock get", time_calls(lambda i, floor=floor, key=key: floor.get(key), n)))
        results.append(Result(group, "dict+lock set", time_calls(lambda i, floor=floor, key=key, doc=doc: floor.setex(key, 3600, doc), n)))
        raw.execute("select public.thread_set(%s, %s, 3600)", (key, doc))
        results.append(Result(group, "psycopg SELECT 1", time_calls(lambda i: raw.execute("select 1").fetchone(), n)))
        results.append(Result(group, "psycopg select row",
                              time_calls(lambda i, key=key: raw.execute(RAW_SELECT, (key,), prepare=True).fetchone(), n)))
        raw_key = f"thread:bench-raw-{label}"
        results.append(Result(group, "psycopg upsert",
                              time_calls(lambda i, raw_key=raw_key, doc=doc:
                                         raw.execute(RAW_UPSERT, (raw_key, doc, 3600), prepare=True), n)))
        if redis_client is not None:
            results.append(Result(group, "redis SET EX", time_calls(lambda i, key=key, doc=doc: redis_client.set(key, doc, ex=3600), n),
                                  baseline="psycopg upsert"))
            results.append(Result(group, "redis GET", time_calls(lambda i, key=key: redis_client.get(key), n),
                                  baseline="psycopg select row"))
        for name, storage in backends.items():
            in_process = name in ("memory",)
            storage.setex(key, 3600, doc)
            results.append(Result(group, f"{name} get", time_calls(lambda i, storage=storage, key=key: storage.get(key), n),
                                  baseline="dict+lock get" if in_process else "psycopg select row"))
            results.append(Result(group, f"{name} set", time_calls(lambda i, storage=storage, key=key, doc=doc:
                                                                    storage.setex(key, 3600, doc), n),
                                  baseline="dict+lock set" if in_process else "psycopg upsert"))
    raw.close()
    return results


def bench_mix(backends: dict, quick: bool) -> list[Result]:
    """About 100 gets : 10 sets : 1 delete over 50 KB documents, as in diskcache's benchmark."""
    doc = document_of_size(50_000)
    n = 222 if quick else 2220
    results = []
    for name, storage in backends.items():
        keys = [f"thread:mix-{i}" for i in range(100)]
        for k in keys:
            storage.setex(k, 3600, doc)

        def op(i: int, storage=storage, keys=keys) -> None:
            k = keys[i % 100]
            slot = i % 111
            if slot < 100:
                storage.get(k)
            elif slot < 110:
                storage.setex(k, 3600, doc)
            else:
                storage.delete(k)
                storage.setex(k, 3600, doc)

        results.append(Result("mix 100:10:1 (50KB)", f"{name} mix", time_calls(op, n),
                              baseline="memory mix" if name != "memory" else None))
    return results


def count_round_trips(stack: Stack, supabase: SupabaseStorage) -> list[Result]:
    """Round trips per call, counted on the wire (Postgres, through a proxy that adds no delay)
    and as HTTP requests at the gateway (Supabase)."""
    results = []
    doc = document_of_size(5_000)
    n = 200
    wire = Profile("loopback, counting only", 0.0, 1e12)
    with ShapingProxy(stack.postgres.port, wire) as proxy:
        dsn = stack.dsn.replace(f":{stack.postgres.port}/", f":{proxy.port}/")
        postgres = PostgresStorage(dsn, max_size=1)
        for op_name, op in (("get", lambda s, i: s.get("thread:rt")),
                            ("set", lambda s, i: s.setex("thread:rt", 3600, doc))):
            for i in range(10):  # connected, and past psycopg's prepare threshold
                op(postgres, i)
            proxy.reset()
            samples = time_calls(lambda i, op=op: op(postgres, i), n, warmup=0)
            results.append(Result("round trips", f"postgres {op_name}", samples,
                                  round_trips=proxy.counters().round_trips / n,
                                  note="Postgres round trips per operation, counted on the wire"))
            before = stack.gateway_requests()
            samples = time_calls(lambda i, op=op: op(supabase, i), n, warmup=0)
            per_op = (stack.gateway_requests() - before) / n
            results.append(Result("round trips", f"supabase {op_name}", samples, round_trips=per_op,
                                  note="HTTP requests per operation"))
        postgres.close()
    return results


def bench_scale(stack: Stack, postgres: PostgresStorage, quick: bool) -> list[Result]:
    big = 100_000 if quick else 1_000_000
    n = 300 if quick else 3000
    results = []
    with psycopg.connect(stack.dsn, autocommit=True) as conn:
        for rows in (1_000, big):
            conn.execute("truncate public.conversation_threads")
            conn.execute(
                "insert into public.conversation_threads (thread_id, conversation_data, expires_at)"
                " select 'thread:scale-' || i, '{\"turns\": []}', now() + interval '1 day'"
                " from generate_series(1, %s) i", (rows,),
            )
            conn.execute("analyze public.conversation_threads")
            keys = [f"thread:scale-{1 + (i * 7919) % rows}" for i in range(n)]
            results.append(Result("scale", f"postgres get, {rows:,} live threads",
                                  time_calls(lambda i, keys=keys: postgres.get(keys[i]), n),
                                  baseline="postgres get, 1,000 live threads" if rows != 1_000 else None))
    return results


def bench_cleanup(stack: Stack, postgres: PostgresStorage, quick: bool) -> tuple[list[Result], dict]:
    expired = 100_000 if quick else 1_000_000
    with psycopg.connect(stack.dsn, autocommit=True) as conn:
        conn.execute("truncate public.conversation_threads")
        conn.execute(
            "insert into public.conversation_threads (thread_id, conversation_data, expires_at)"
            " select 'thread:old-' || i, '{\"turns\": []}', now() - interval '1 minute' from generate_series(1, %s) i",
            (expired,),
        )
        conn.execute(
            "insert into public.conversation_threads (thread_id, conversation_data, expires_at)"
            " select 'thread:live-' || i, '{\"turns\": []}', now() + interval '1 day' from generate_series(1, 1000) i"
        )
        conn.execute("analyze public.conversation_threads")
    reader_keys = [f"thread:live-{1 + i % 1000}" for i in range(100_000)]
    idle = time_calls(lambda i: postgres.get(reader_keys[i]), 300)
    during: list[float] = []
    done = threading.Event()

    def reader() -> None:
        i = 0
        while not done.is_set():
            during.extend(time_calls(lambda j, i=i: postgres.get(reader_keys[(i + j) % 100_000]), 20, warmup=0))
            i += 20

    thread = threading.Thread(target=reader)
    thread.start()
    sweeper = PostgresStorage(stack.dsn, max_size=1)
    result = cleanup_until_done(sweeper, 1000)
    done.set()
    thread.join()
    sweeper.close()
    summary = {"expired_rows": expired, "deleted": result.deleted, "seconds": round(result.seconds, 2),
               "rows_per_second": round(result.deleted / result.seconds)}
    return [
        Result("cleanup", "reader get, idle", idle),
        Result("cleanup", "reader get, during sweep", during, baseline="reader get, idle"),
    ], summary


def bench_concurrency(stack: Stack, quick: bool) -> dict:
    doc = document_of_size(5_000)
    seconds = 1.0 if quick else 3.0
    out = {}
    with PostgresStorage(stack.dsn, min_size=8, max_size=8) as storage:
        for i in range(100):
            storage.setex(f"thread:c{i}", 3600, doc)
        for threads in (1, 4, 8):
            out[threads] = round(throughput(lambda i: storage.get(f"thread:c{i % 100}"), threads, seconds))
    return out


def machine(stack: Stack) -> dict:
    return {
        "date": datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "cpus": os.cpu_count(),
        "platform": platform.platform(),
        "python": platform.python_version(),
        "postgres": stack.postgres_version,
        "redis": "installed" if stack.redis_port else "not installed (peer left out)",
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small samples, about a minute")
    parser.add_argument("--out", default=str(Path(__file__).resolve().parents[2] / "benchmarks"),
                        help="directory for report.md, results.json and chart.png")
    args = parser.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    started = time.monotonic()
    stack = Stack()
    tmp = tempfile.TemporaryDirectory()
    try:
        # The near cache asked for: for a server on loopback the default has none.
        postgres = PostgresStorage(stack.dsn, max_size=4, near_cache=True)
        supabase = SupabaseStorage(stack.supabase_url, stack.secret_key, near_cache=True)
        backends = {
            "memory": InMemoryStorage(),
            "sqlite": SQLiteStorage(Path(tmp.name) / "bench.sqlite3"),
            "postgres": postgres,
            "supabase": supabase,
            # Each size rewrites one document unchanged: with the near cache a
            # get moves only the version and a set an empty patch; these show
            # every document crossing whole.
            "postgres, no cache": PostgresStorage(stack.dsn, max_size=4, near_cache=False),
            "supabase, no cache": SupabaseStorage(stack.supabase_url, stack.secret_key, near_cache=False),
        }
        # Pinned to one core, as postgres_path.py measures (its docstring says why); the rest runs on all.
        stack.pin({0})
        path = postgres_path.measure(stack.dsn, stack.redis_port, 5 if args.quick else 15, 100 if args.quick else 400)
        stack.pin(all_cpus())
        results = bench_sizes(stack, backends, args.quick)
        results += bench_mix(backends, args.quick)
        results += count_round_trips(stack, supabase)
        results += bench_scale(stack, postgres, args.quick)
        cleanup_results, cleanup = bench_cleanup(stack, postgres, args.quick)
        results += cleanup_results
        concurrency = bench_concurrency(stack, args.quick)
        info = machine(stack)
        for storage in backends.values():
            storage.close()
    finally:
        stack.close()
        tmp.cleanup()
    info["mode"] = "quick" if args.quick else "full"
    info["seconds"] = round(time.monotonic() - started, 1)
    print_table(results)
    print(f"\ncleanup: {json.dumps(cleanup)}")
    print(f"postgres get throughput by threads (ops/s): {json.dumps(concurrency)}")
    print("\n" + "\n".join(postgres_path.markdown(path)))
    write_markdown(out / "report.md", results, cleanup, concurrency, info, postgres_path.markdown(path))
    (out / "results.json").write_text(json.dumps({
        "machine": info, "cleanup": cleanup, "concurrency": concurrency,
        "postgres_path": {"p50_us": path, "ratios": postgres_path.ratios(path)},
        "results": [{"group": r.group, "name": r.name, "p50_us": r.p50, "p90_us": r.p90, "p99_us": r.p99,
                     "ops_per_s": r.ops_per_s, "baseline": r.baseline, "round_trips": r.round_trips}
                    for r in results],
    }, indent=1))
    chart = write_chart(out / "chart.png", results)
    print(f"\nreport: {out / 'report.md'}" + (f", chart: {chart}" if chart else ", chart: matplotlib not installed"))
    return 0


if __name__ == "__main__":
    sys.exit(main())
