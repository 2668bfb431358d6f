#!/usr/bin/env python3
"""How many pal exchanges per second one database serves, by the number of daemons.

    python scripts/benchmarks/load.py                      # 1, 8, 32, 128 daemons, every path (~8 min)
    python scripts/benchmarks/load.py --quick              # 1 and 8 daemons, short rounds
    python scripts/benchmarks/load.py --daemons 16 --processes 1 --paths raw postgres --rounds 3

A daemon is one thread of one process, as in pal-mcp-server, where each
request runs on a thread of its own. ``--daemons N`` runs N of them spread over
up to ``--processes`` processes (default 4: Python runs one thread at a time
per process). Each daemon runs pal exchanges on its own conversation: get the
thread; then twice get, append a ~2 KB turn and setex the whole thread (pal's
add_turn). A conversation that reaches about 50 KB ends and a new one starts.

Paths: ``postgres`` (PostgresStorage, direct), ``pgbouncer`` (the same
through PgBouncer in transaction mode, pool of 20 server connections),
``supabase`` (SupabaseStorage through the RPC gateway the tests use as
Supabase's API: a stand-in, not PostgREST, with a pool of its own), each with
the near cache on and off; ``raw`` (the same exchange in plain psycopg,
prepared select and upsert, one connection per daemon: the baseline) and
``redis`` (redis-py GET and SET EX against a local redis-server: the peer).

For each: exchanges per second over the measured window, p50 and p99 of an
exchange, the server connections in use at the end, and the CPU the servers
used (Postgres: the postmaster and all its children; the pooler, gateway or
redis apart), in cores. Postgres runs durable (fsync on), on this machine.
Writes load_report.md and load_results.json (``--out``, default benchmarks/).
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import statistics
import sys
import threading
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from tests.support.documents import conversation_document

TTL = 3 * 3600  # pal's CONVERSATION_TIMEOUT_HOURS
TURN_CHARS = 2000
END_OF_CONVERSATION = 50_000  # bytes: then a new conversation starts
WARM_UP_SECONDS = 2.0
#: What the closing sentence assumes of a pal conversation: one exchange this often.
SECONDS_BETWEEN_EXCHANGES = 30
PATHS = ["raw", "postgres", "pgbouncer", "supabase", "redis"]
CACHED_PATHS = {"postgres", "pgbouncer", "supabase"}

RAW_SELECT = ("select conversation_data::text from public.conversation_threads"
              " where thread_id = %s and expires_at > now()")
RAW_UPSERT = ("insert into public.conversation_threads as t (thread_id, conversation_data, expires_at)"
              " values (%s, %s::jsonb, now() + make_interval(secs => %s))"
              " on conflict (thread_id) do update set conversation_data = excluded.conversation_data,"
              " expires_at = excluded.expires_at")


# -- the daemons (run in worker processes) -----------------------------------

class _RawStorage:
    """The exchange in plain psycopg: one connection per daemon thread, prepared statements."""

    def __init__(self, dsn: str) -> None:
        self._dsn = dsn
        self._local = threading.local()

    def _conn(self):
        import psycopg

        if not hasattr(self._local, "conn"):
            self._local.conn = psycopg.connect(self._dsn, autocommit=True)
        return self._local.conn

    def get(self, key: str) -> str | None:
        row = self._conn().execute(RAW_SELECT, (key,), prepare=True).fetchone()
        return row[0] if row else None

    def setex(self, key: str, ttl: int, value: str) -> None:
        self._conn().execute(RAW_UPSERT, (key, value, ttl), prepare=True)

    def close(self) -> None:
        pass


class _RedisStorage:
    def __init__(self, port: int) -> None:
        import redis

        self._client = redis.Redis(port=port, max_connections=512)

    def get(self, key: str) -> str | None:
        value = self._client.get(key)
        return value.decode() if isinstance(value, bytes) else value

    def setex(self, key: str, ttl: int, value: str) -> None:
        self._client.setex(key, ttl, value)

    def close(self) -> None:
        self._client.close()


def _open(target: dict, threads: int):
    kind = target["kind"]
    if kind == "raw":
        return _RawStorage(target["dsn"])
    if kind == "redis":
        return _RedisStorage(target["port"])
    if kind == "supabase":
        from utils.infrastructure.backends.supabase_storage import SupabaseStorage

        return SupabaseStorage(target["url"], target["key"], near_cache=target["cache"])
    from utils.infrastructure.backends.postgres_storage import PostgresStorage

    return PostgresStorage(target["dsn"], near_cache=target["cache"], min_size=threads, max_size=threads,
                           transaction_pooler=kind == "pgbouncer")


def _dump(thread: dict) -> str:
    return json.dumps(thread, separators=(",", ":"), ensure_ascii=False)


def _conversation(storage, prefix: str, measure_from: float, until: float, seconds: list[float]) -> int:
    """One daemon: conversations one after another until ``until``; the exchanges it timed go into ``seconds``."""
    turns = json.loads(conversation_document(64, TURN_CHARS, seed=hash(prefix) & 0xFFFF))["turns"]
    done = 0
    while time.time() < until:
        key = f"thread:{prefix}-{uuid.uuid4().hex[:8]}"
        thread = json.loads(conversation_document(1, TURN_CHARS, seed=done))
        text = _dump(thread)
        storage.setex(key, TTL, text)
        position = 1
        while len(text) < END_OF_CONVERSATION and time.time() < until:
            started = time.time()
            json.loads(storage.get(key))  # the tool rebuilds the conversation for the model
            for _ in range(2):  # the user's turn, then the assistant's: pal's add_turn each
                thread = json.loads(storage.get(key))
                now = datetime.now(UTC).isoformat()
                thread["turns"].append(dict(turns[position % len(turns)], timestamp=now))
                thread["last_updated_at"] = now
                text = _dump(thread)
                storage.setex(key, TTL, text)
                position += 1
            finished = time.time()
            if started >= measure_from and finished <= until:
                seconds.append(finished - started)
            done += 1
    return done


def run_daemons(target: dict, threads: int, index: int, measure_from: float, until: float, answers) -> None:
    """A worker process: ``threads`` daemons on one storage, as one pal-mcp-server process."""
    storage = _open(target, threads)
    per_thread: list[list[float]] = [[] for _ in range(threads)]
    errors: list[str] = []

    def daemon(i: int) -> None:
        try:
            _conversation(storage, f"load-{index}-{i}", measure_from, until, per_thread[i])
        except Exception as exc:  # noqa: BLE001 - any client's error is counted in the report, not hidden
            errors.append(f"{type(exc).__name__}: {exc}")

    workers = [threading.Thread(target=daemon, args=(i,)) for i in range(threads)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()
    storage.close()
    answers.put(([s for seconds in per_thread for s in seconds], errors))


# -- the servers' side ---------------------------------------------------------

def _cpu_seconds(pids: list[int]) -> float:
    """utime + stime of ``pids`` so far, from /proc (processes gone since count as 0)."""
    ticks = os.sysconf("SC_CLK_TCK")
    total = 0
    for pid in pids:
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        except (FileNotFoundError, ProcessLookupError):
            continue
        total += int(fields[11]) + int(fields[12])  # utime, stime (fields 14 and 15 of stat)
    return total / ticks


def _postgres_pids(postmaster: int) -> list[int]:
    children = Path(f"/proc/{postmaster}/task/{postmaster}/children").read_text().split()
    return [postmaster, *map(int, children)]


class _CpuMeter:
    """CPU used by a set of processes over a window; Postgres backends come and go, so they are
    read just before the window closes, and their time before it opened is subtracted."""

    def __init__(self, postmaster: int | None, others: list[int]) -> None:
        self._postmaster = postmaster
        self._others = others
        self._before: dict[int, float] = {}

    def _now(self) -> dict[int, float]:
        pids = (_postgres_pids(self._postmaster) if self._postmaster else []) + self._others
        return {pid: _cpu_seconds([pid]) for pid in pids}

    def start(self) -> None:
        self._before = self._now()
        self._started = time.time()

    def cores(self) -> dict[str, float]:
        now = self._now()
        elapsed = time.time() - self._started
        spent = {pid: now[pid] - self._before.get(pid, 0.0) for pid in now}
        database = sum(v for pid, v in spent.items() if pid not in self._others)
        others = sum(v for pid, v in spent.items() if pid in self._others)
        return {"db_cores": round(database / elapsed, 2), "middle_cores": round(others / elapsed, 2)}


def _connections(admin_dsn: str, user: str) -> int:
    """Server connections of ``user``: the daemons', the pooler's or the gateway's."""
    import psycopg

    with psycopg.connect(admin_dsn, autocommit=True) as conn:
        row = conn.execute("select count(*) from pg_stat_activity where backend_type = 'client backend'"
                           " and usename = %s", (user,)).fetchone()
    assert row is not None, "count(*) answers one row"
    return row[0]


def _redis_clients(port: int) -> int:
    import redis

    client = redis.Redis(port=port)
    try:
        return int(client.info("clients")["connected_clients"]) - 1
    finally:
        client.close()


def measure(target: dict, daemons: int, processes: int, seconds: float, stack, bouncer) -> dict:
    """One cell: ``daemons`` daemons on ``target`` for ``seconds`` after a warm-up."""
    processes = min(processes, daemons)
    threads = [daemons // processes + (1 if i < daemons % processes else 0) for i in range(processes)]
    context = multiprocessing.get_context("spawn")
    answers = context.Queue()
    start = time.time() + 3.0  # the workers import and connect first
    measure_from = start + WARM_UP_SECONDS
    until = measure_from + seconds
    workers = [context.Process(target=run_daemons, args=(target, n, i, measure_from, until, answers))
               for i, n in enumerate(threads)]
    for worker in workers:
        worker.start()
    middle = {"pgbouncer": [bouncer.pid] if bouncer else [], "supabase": [stack.gateway_pid],
              "redis": [stack.redis_pid] if stack.redis_pid else []}.get(target["kind"], [])
    meter = _CpuMeter(None if target["kind"] == "redis" else stack.postgres.postmaster_pid, middle)
    time.sleep(max(0.0, measure_from - time.time()))
    meter.start()
    time.sleep(max(0.0, measure_from + seconds / 2 - time.time()))
    if target["kind"] == "redis":
        connections = _redis_clients(target["port"])
    else:
        # The gateway logs in as authenticator, as PostgREST does; everything else here as postgres.
        connections = _connections(stack.admin_dsn, "authenticator" if target["kind"] == "supabase" else "postgres")
    time.sleep(max(0.0, until - time.time() - 0.3))
    cpu = meter.cores()
    latencies: list[float] = []
    errors: list[str] = []
    for _ in workers:
        seconds_of, errors_of = answers.get(timeout=seconds + 120)
        latencies += seconds_of
        errors += errors_of
    for worker in workers:
        worker.join(timeout=60)
    latencies.sort()
    return {
        "path": target["kind"], "cache": target.get("cache"), "daemons": daemons, "processes": processes,
        "exchanges_per_s": round(len(latencies) / seconds, 1),
        "p50_ms": round(statistics.median(latencies) * 1000, 2) if latencies else None,
        "p99_ms": round(latencies[int(len(latencies) * 0.99) - 1] * 1000, 2) if len(latencies) >= 100 else None,
        "connections": connections, **cpu, "errors": errors[:3], "error_count": len(errors),
    }


def median_round(cell: list[dict]) -> dict:
    """The round of median throughput, with every round's figure beside it."""
    ordered = sorted(cell, key=lambda row: row["exchanges_per_s"])
    return {**ordered[(len(ordered) - 1) // 2], "rounds": [row["exchanges_per_s"] for row in cell]}


def targets(stack, bouncer, paths: list[str]) -> list[dict]:
    chosen = []
    for path in paths:
        if path == "raw":
            chosen.append({"kind": "raw", "dsn": stack.dsn})
        elif path == "redis":
            if stack.redis_port:
                chosen.append({"kind": "redis", "port": stack.redis_port})
        else:
            for cache in (False, True):
                target = {"kind": path, "cache": cache}
                if path == "postgres":
                    target["dsn"] = stack.dsn
                elif path == "pgbouncer":
                    target["dsn"] = bouncer.dsn_for()
                else:
                    target.update(url=stack.supabase_url, key=stack.secret_key)
                chosen.append(target)
    return chosen


# -- report -------------------------------------------------------------------

def _label(row: dict) -> str:
    if row["cache"] is None:
        return row["path"]
    # Every server here is on loopback, where the default is no near cache.
    return f"{row['path']}, near cache {'on' if row['cache'] else 'off (the default here)'}"


def _rate(row: dict) -> str:
    rounds = row.get("rounds", [])
    spread = f" ({min(rounds):,.0f} to {max(rounds):,.0f})" if len(rounds) > 1 else ""
    return f"{row['exchanges_per_s']:,.0f}{spread}"


def markdown(rows: list[dict], info: dict) -> list[str]:
    header = ("| path | daemons | exchanges/s | of raw SQL | p50 ms | p99 ms | server connections "
              "| Postgres CPU (cores) | pooler/gateway/redis CPU | errors |")
    lines = [header, "|---|---|---|---|---|---|---|---|---|---|"]
    raw = {r["daemons"]: r["exchanges_per_s"] for r in rows if r["path"] == "raw"}
    for row in rows:
        of_raw = f"{row['exchanges_per_s'] / raw[row['daemons']]:.2f}x" if raw.get(row["daemons"]) else ""
        lines.append(
            f"| {_label(row)} | {row['daemons']} | {_rate(row)} | {of_raw} | {row['p50_ms']} "
            f"| {row['p99_ms'] or ''} | {row['connections']} | {row['db_cores']} | {row['middle_cores']} "
            f"| {row['error_count']} |")
    lines += ["", summary(rows, info)]
    return lines


def summary(rows: list[dict], info: dict) -> str:
    library = [r for r in rows if r["path"] in CACHED_PATHS and r["path"] != "supabase" and not r["error_count"]]
    if not library:
        return ""
    best = max(library, key=lambda r: r["exchanges_per_s"])
    rate = best["exchanges_per_s"]
    return (f"One {info['cpus']}-core Postgres sustains {rate:,.0f} exchanges/s ({_label(best)}, "
            f"{best['daemons']} daemons), that is {rate * SECONDS_BETWEEN_EXCHANGES:,.0f} concurrent pal "
            f"conversations at one exchange every {SECONDS_BETWEEN_EXCHANGES} s.")


def main() -> int:
    from scripts.benchmarks.stack import Stack
    from tests.support.pgbouncer import PgBouncer

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--daemons", type=int, nargs="+")
    parser.add_argument("--processes", type=int, default=4)
    parser.add_argument("--paths", nargs="+", choices=PATHS, default=PATHS)
    parser.add_argument("--seconds", type=float)
    parser.add_argument("--rounds", type=int, default=1,
                        help="run every path this many times in turn; a cell is its median round")
    parser.add_argument("--out", type=Path, default=Path("benchmarks"))
    args = parser.parse_args()
    daemons = args.daemons or ([1, 8] if args.quick else [1, 8, 32, 128])
    seconds = args.seconds or (3.0 if args.quick else 8.0)
    # Enough for 128 daemons with a connection each, and the pooler's and the gateway's.
    stack = Stack(settings={"max_connections": "400"})
    bouncer = PgBouncer(stack.postgres).start() if "pgbouncer" in args.paths else None
    rows = []
    try:
        for count in daemons:
            # Rounds alternate the paths, so a slow spell of the machine lands on all of them.
            rounds: list[list[dict]] = [[] for _ in targets(stack, bouncer, args.paths)]
            for _ in range(args.rounds):
                for cell, target in zip(rounds, targets(stack, bouncer, args.paths), strict=True):
                    row = measure(target, count, args.processes, seconds, stack, bouncer)
                    print(json.dumps(row), flush=True)
                    cell.append(row)
            rows += [median_round(cell) for cell in rounds]
    finally:
        if bouncer:
            bouncer.stop()
        stack.close()
    info = {"cpus": os.cpu_count(), "postgres": stack.postgres_version, "seconds": seconds,
            "processes": args.processes, "rounds": args.rounds, "date": datetime.now(UTC).isoformat(timespec="seconds")}
    args.out.mkdir(parents=True, exist_ok=True)
    command = " ".join(["python scripts/benchmarks/load.py", *sys.argv[1:]])
    lines = ["# pal exchanges under load", "", f"`{command}`, {info}", "",
             *markdown(rows, info)]
    (args.out / "load_report.md").write_text("\n".join(lines) + "\n")
    (args.out / "load_results.json").write_text(json.dumps({"info": info, "rows": rows}, indent=1) + "\n")
    print("\n".join(markdown(rows, info)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
