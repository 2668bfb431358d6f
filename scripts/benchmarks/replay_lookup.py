#!/usr/bin/env python3
"""What a replay pays to read the cleanup sweeps newer than it.

    python scripts/benchmarks/replay_lookup.py           # up to 1,000,000 swept keys (~1 min)
    python scripts/benchmarks/replay_lookup.py --quick

A sweep records its keys in one row per step of up to 1,000 rows and no
index entry per key (sql/versioned/003_cleanup_sweeps.sql), so
thread_replay reads every sweep whose newest key was written after the
replayed write. This fills
conversation_thread_sweeps with rows of 1,000 random keys, all written an
hour ago, and times thread_replay of a key no sweep holds, written two hours
ago (it reads every row) and ten minutes ago (the index on newest_written_at
leaves none). The baseline is the same replay with no sweeps at all, in the
same run. Durable server (fsync on), loopback, one connection; the figure is
the median of the repetitions.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from tests.support.database import apply_sql
from tests.support.postgres_server import PostgresServer

FILL = """
insert into public.conversation_thread_sweeps (newest_written_at, thread_ids, written_ats)
select now() - interval '1 hour', array_agg('thread:' || gen_random_uuid()),
       array_agg(now() - interval '1 hour' - k * interval '1 ms')
  from generate_series(1, %s) r, generate_series(1, 1000) k
 group by r
"""
REPLAY = "select public.thread_replay(%s, 'set', now() - %s::interval, '{}', 86400)"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="up to 10,000 swept keys, fewer repetitions")
    args = parser.parse_args()
    sweeps = (0, 10) if args.quick else (0, 10, 100, 1000)
    repetitions = 5 if args.quick else 30
    with PostgresServer(durable=True) as server, server.connect() as conn:
        apply_sql(conn)
        print("| keys swept since the write | replay older than every sweep | replay newer than every sweep |")
        print("| --- | --- | --- |")
        baseline: dict[str, float] = {}
        for rows in sweeps:
            conn.execute("truncate public.conversation_thread_sweeps")
            conn.execute(FILL, (rows,))
            conn.execute("vacuum analyze public.conversation_thread_sweeps")
            cells = []
            for age in ("2 hours", "10 minutes"):
                samples = []
                for i in range(repetitions):
                    started = time.perf_counter()
                    conn.execute(REPLAY, (f"thread:probe-{rows}-{age}-{i}", age))
                    samples.append(time.perf_counter() - started)
                median = statistics.median(samples)
                baseline.setdefault(age, median)
                cells.append(f"{median * 1000:.2f} ms ({median / baseline[age]:.1f}x)")
            print(f"| {rows * 1000:,} | {cells[0]} | {cells[1]} |", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
