#!/usr/bin/env python3
"""Where a get's and a set's time goes on the Postgres path: client CPU, server CPU, and the client's steps.

    python scripts/benchmarks/path_costs.py          # about a minute

Wall times on two cores depend on where the scheduler puts the server
process; CPU times do not. Pinned to one core like postgres_path.py, each
call is timed as the CPU its client thread used (``time.thread_time``) and
the CPU its server process used (``/proc/<pid>/stat``, in clock ticks, so
over 2,000 calls a figure is good to about 5 µs), against the same SQL typed
by hand; then the server's CPU for the functions, their statements typed by
hand and copies of them without their fixed search_path. Then each step of
the library's client side runs alone in a loop, warm: in a real call the server runs on the same core in between and leaves
the caches cold, so the steps cost more there than here.
"""

from __future__ import annotations

import argparse
import os
import re
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

import psycopg

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from scripts.benchmarks.postgres_path import RAW_SELECT, RAW_UPSERT, RAW_UPSERT_FULL
from tests.support.documents import document_of_size
from utils.infrastructure.backends import postgres_storage
from utils.infrastructure.backends.call_deadline import CallDeadlines
from utils.infrastructure.backends.postgres_storage import PostgresStorage
from utils.infrastructure.contract.json_envelope import to_stored
from utils.infrastructure.contract.json_numbers import check_numbers
from utils.infrastructure.contract.validation import validate_set
from utils.infrastructure.remote.function_calls import set_call

TICKS = os.sysconf("SC_CLK_TCK")


def _process_cpu(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICKS  # utime + stime


def cpu_per_call(dsn: str, rounds: int, calls: int) -> dict[str, tuple[float, float]]:
    """(client, server) CPU µs per call, the median over ``rounds`` alternating rounds."""
    doc = document_of_size(5_000)
    storage = PostgresStorage(dsn, min_size=1, max_size=1, near_cache=True)
    cache = storage.near_cache
    storage.setex("thread:costs-get", 3600, doc)
    storage.get("thread:costs-get")  # held as the store prints it: a get with the cache moves the version
    conn = storage._pool.getconn()
    backend = conn.info.backend_pid
    storage._pool.putconn(conn)

    def raw(statement: str, params: tuple) -> Callable[[], object]:
        def call() -> object:
            held = storage._pool.getconn()
            try:
                return held.execute(statement, params, prepare=True)
            finally:
                storage._pool.putconn(held)
        return call

    def library(on: bool, call: Callable[[], object]) -> Callable[[], object]:
        def timed() -> object:
            storage.near_cache = cache if on else None
            return call()
        return timed

    contenders = {
        "raw select": raw(RAW_SELECT, ("thread:costs-get",)),
        "get, no cache (thread_get)": library(False, lambda: storage.get("thread:costs-get")),
        "get, near cache (thread_fetch)": library(True, lambda: storage.get("thread:costs-get")),
        "raw upsert": raw(RAW_UPSERT, ("thread:costs-raw", doc, 3600)),
        "set (thread_put)": library(False, lambda: storage.setex("thread:costs-set", 3600, doc)),
    }
    figures = _cpu_in_rounds(contenders, backend, rounds, calls)
    storage.near_cache = cache
    storage.close()
    return figures


def _cpu_in_rounds(contenders: dict[str, Callable[[], object]], backend: int, rounds: int,
                   calls: int) -> dict[str, tuple[float, float]]:
    """(client, server) CPU µs per call of each contender, the median over ``rounds`` alternating rounds."""
    samples: dict[str, list[tuple[float, float]]] = {name: [] for name in contenders}
    for _ in range(rounds):
        for name, call in contenders.items():
            for _ in range(20):
                call()
            client, server = time.thread_time(), _process_cpu(backend)
            for _ in range(calls):
                call()
            samples[name].append(((time.thread_time() - client) / calls * 1e6,
                                  (_process_cpu(backend) - server) / calls * 1e6))
    return {name: (statistics.median(c for c, _ in runs), statistics.median(s for _, s in runs))
            for name, runs in samples.items()}


def _without_search_path(conn: psycopg.Connection, function: str, file: str) -> str:
    """A copy of public.``function`` without its fixed search_path, as bench_``function``."""
    text = (Path(__file__).resolve().parents[2] / "sql" / "repeatable" / file).read_text()
    match = re.search(rf"create or replace function public\.{function}\(.*?\n\$\$;\n", text, re.DOTALL)
    assert match, f"no {function} in {file}"
    conn.execute(match.group(0).replace(f"public.{function}(", f"public.bench_{function}(", 1)
                 .replace("set search_path = ''\n", "", 1))
    return f"public.bench_{function}"


def server_cpu(dsn: str, rounds: int, calls: int) -> dict[str, float]:
    """Server CPU µs per statement: the functions, their statements typed by hand, without search_path."""
    doc = document_of_size(5_000)
    with psycopg.connect(dsn, autocommit=True) as conn:
        get_copy = _without_search_path(conn, "thread_get", "10_thread_operations.sql")
        put_copy = _without_search_path(conn, "thread_put", "20_near_cache.sql")
        conn.execute("select public.thread_put('thread:costs-sql', %s, 3600)", (doc,))
        put = "(p_thread_id => %s, p_data => %s, p_ttl_seconds => %s)"
        statements = {
            "raw select": (RAW_SELECT, ("thread:costs-sql",)),
            "thread_get": ("select public.thread_get(%s)", ("thread:costs-sql",)),
            "thread_get without its search_path": (f"select {get_copy}(%s)", ("thread:costs-sql",)),
            "raw upsert": (RAW_UPSERT, ("thread:costs-raw", doc, 3600)),
            "thread_put's statement typed by hand": (RAW_UPSERT_FULL, ("thread:costs-full", doc, doc, 3600)),
            "thread_put": ("select public.thread_put" + put, ("thread:costs-put", doc, 3600)),
            "thread_put without its search_path": (f"select {put_copy}" + put, ("thread:costs-copy", doc, 3600)),
        }
        contenders: dict[str, Callable[[], object]] = {
            name: lambda statement=statement, params=params: conn.execute(statement, params, prepare=True)
            for name, (statement, params) in statements.items()}
        figures = _cpu_in_rounds(contenders, conn.info.backend_pid, rounds, calls)
    return {name: server for name, (_, server) in figures.items()}


def client_steps(loops: int) -> dict[str, float]:
    """µs per call of each client-side step of a 5 KB set and a get, alone in a warm loop."""
    doc = document_of_size(5_000)
    deadlines = CallDeadlines()
    steps: dict[str, Callable[[], object]] = {
        "set: validate_set (orjson reads it, the number rule)": lambda: validate_set(
            "thread:k", 3600, doc, None, None, 10_000_000),
        "set: the number rule alone": lambda: check_numbers(doc, 10_000_000, size_bound=len(doc), ints=False),
        "set: to_stored (envelope check)": lambda: to_stored(doc),
        "set: set_call (the call's plan)": lambda: set_call("thread:k", 3600, doc, None, None),
        "set: statement and parameters": lambda: postgres_storage._statement_and_params(
            "thread_put", {"p_thread_id": "thread:k", "p_data": doc, "p_ttl_seconds": 3600}),
        "both: deadline watch start + finish": lambda: deadlines.finish(deadlines.start(0, time.monotonic() + 60)),
        "both: answer read by orjson (set's)": lambda: postgres_storage._answer_loads(
            b'{"version": 5764607523034234880, "expires_at": "2026-12-02T14:00:00.123456+00:00"}'),
    }
    figures = {}
    for name, step in steps.items():
        for _ in range(100):
            step()
        best = float("inf")
        for _ in range(5):
            started = time.thread_time()
            for _ in range(loops):
                step()
            best = min(best, (time.thread_time() - started) / loops * 1e6)
        figures[name] = best
    deadlines.close()
    return figures


def main() -> int:
    from scripts.benchmarks.stack import Stack

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--cpu", type=int, default=0, help="the core to pin this process and Postgres to")
    args = parser.parse_args()
    stack = Stack()
    try:
        stack.pin({args.cpu})
        per_call = cpu_per_call(stack.dsn, 2 if args.quick else 3, 200 if args.quick else 2000)
        per_statement = server_cpu(stack.dsn, 2 if args.quick else 3, 200 if args.quick else 1500)
    finally:
        stack.close()
    print("| call (5 KB) | client CPU µs | server CPU µs | sum |\n|---|---|---|---|")
    for name, (client, server) in per_call.items():
        print(f"| {name} | {client:.1f} | {server:.1f} | {client + server:.1f} |")
    print("\n| statement (5 KB) | server CPU µs |\n|---|---|")
    for name, micros in per_statement.items():
        print(f"| {name} | {micros:.1f} |")
    print("\n| client step, warm loop | µs |\n|---|---|")
    for name, micros in client_steps(200 if args.quick else 5000).items():
        print(f"| {name} | {micros:.2f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
