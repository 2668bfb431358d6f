#!/usr/bin/env python3
"""Where a get's and a set's time goes on the Postgres path: client CPU, server CPU, and the client's steps.

    python scripts/benchmarks/path_costs.py          # about a minute

Wall times on two cores depend on where the scheduler puts the server
process; CPU times do not. Pinned to one core like postgres_path.py, each
call is timed as the CPU its client thread used (``time.thread_time``) and
the CPU its server process used (``/proc/<pid>/stat``, in clock ticks, so
over 2,000 calls a figure is good to about 5 µs), against the same SQL typed
by hand; then pgbench times the functions, the statements typed by hand and
copies of the functions without their fixed search_path, to the microsecond.
Then each step of the library's client side runs alone in a loop, warm: in a
real call the server runs on the same core in between and leaves the caches
cold, so the steps cost more there than here.
"""

from __future__ import annotations

import argparse
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import psycopg

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from scripts.benchmarks.postgres_path import RAW_SELECT, RAW_UPSERT, RAW_UPSERT_FULL
from scripts.benchmarks.stack import Stack
from tests.support.documents import document_of_size
from tests.support.postgres_server import PASSWORD, find_bindir
from utils.infrastructure.backends import postgres_storage
from utils.infrastructure.backends.call_deadline import CallDeadlines
from utils.infrastructure.backends.libpq_calls import parameters, statement
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


def _with_literals(statement: str, *literals: str) -> str:
    for literal in literals:
        statement = statement.replace("%s", literal, 1)
    return statement


def statement_round_trips(stack: Stack, rounds: int, seconds: float) -> dict[str, float]:
    """µs per statement as pgbench runs it: prepared, one client on the pinned core, alternating rounds.

    A C client's round trip holds almost nothing but the server's work, so
    the differences are the functions' own costs, to the microsecond (the
    server's CPU in clock ticks is good to about 5 µs only).
    """
    doc = document_of_size(5_000)
    with psycopg.connect(stack.dsn, autocommit=True) as conn:
        get_copy = _without_search_path(conn, "thread_get", "10_thread_operations.sql")
        put_copy = _without_search_path(conn, "thread_put", "20_near_cache.sql")
        conn.execute("select public.thread_put('costs-sql', %s, 3600)", (doc,))
    # pgbench reads ":name" as a variable: these keys have no colon.
    literal = "'" + doc.replace("'", "''") + "'"

    def put(key: str) -> str:
        return f"(p_thread_id => '{key}', p_data => {literal}, p_ttl_seconds => 3600)"

    statements = {
        "raw select": _with_literals(RAW_SELECT, "'costs-sql'"),
        "thread_get": "select public.thread_get('costs-sql')",
        "thread_get without its search_path": f"select {get_copy}('costs-sql')",
        "raw upsert": _with_literals(RAW_UPSERT, "'costs-raw'", literal, "3600"),
        "thread_put's statement typed by hand": _with_literals(RAW_UPSERT_FULL, "'costs-full'", literal, literal, "3600"),
        "thread_put": "select public.thread_put" + put("costs-put"),
        "thread_put without its search_path": f"select {put_copy}" + put("costs-copy"),
    }
    bench = find_bindir() / "pgbench"
    env = {**os.environ, "PGPASSWORD": PASSWORD}
    micros: dict[str, list[float]] = {name: [] for name in statements}
    with tempfile.TemporaryDirectory() as scripts:
        for _ in range(rounds):
            for name, sql in statements.items():
                script = Path(scripts) / "statement.sql"
                script.write_text(sql + ";\n")
                out = subprocess.run(
                    [str(bench), "-n", "-M", "prepared", "-T", str(seconds), "-f", str(script),
                     "-h", "127.0.0.1", "-p", str(stack.postgres.port), "-U", "postgres", "postgres"],
                    capture_output=True, text=True, env=env, check=True).stdout
                tps = float(re.search(r"^tps = ([0-9.]+)", out, re.MULTILINE)[1])
                micros[name].append(1e6 / tps)
    return {name: statistics.median(values) for name, values in micros.items()}


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
        "set: statement and parameters": lambda: (
            statement("thread_put", ("p_thread_id", "p_data", "p_ttl_seconds")),
            parameters(["thread:k", doc, 3600], "utf-8")),
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
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--cpu", type=int, default=0, help="the core to pin this process and Postgres to")
    args = parser.parse_args()
    stack = Stack()
    try:
        stack.pin({args.cpu})
        per_call = cpu_per_call(stack.dsn, 2 if args.quick else 3, 200 if args.quick else 2000)
        per_statement = statement_round_trips(stack, 2 if args.quick else 5, 1 if args.quick else 3)
    finally:
        stack.close()
    print("| call (5 KB) | client CPU µs | server CPU µs | sum |\n|---|---|---|---|")
    for name, (client, server) in per_call.items():
        print(f"| {name} | {client:.1f} | {server:.1f} | {client + server:.1f} |")
    print("\n| statement (5 KB), pgbench | µs per statement |\n|---|---|")
    for name, micros in per_statement.items():
        print(f"| {name} | {micros:.1f} |")
    print("\n| client step, warm loop | µs |\n|---|---|")
    for name, micros in client_steps(200 if args.quick else 5000).items():
        print(f"| {name} | {micros:.2f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
