#!/usr/bin/env python3
"""How much the in-memory backend costs against its baselines, measured in one run.

- get: against a store shaped like pal-mcp-server's InMemoryStorage.get
  (lock, dict lookup, wall-clock expiry check, debug log call).
- set: against a bare ``json.loads`` / ``orjson.loads`` of the same value,
  since validating the JSON is the one cost the contract demands.
- validate: what a set checks before it stores (``validate_set``), against
  ``json.loads`` of the same value, for documents of 1 KB to 500 KB.

Prints per-operation times (median of alternating repeats) and ratios (median of
the repeats' ratios). ``--quick`` runs fewer iterations; ``--code DIR`` measures
the library of another checkout (say, an older commit's ``git worktree``) with
this checkout's documents.
"""

from __future__ import annotations

import argparse
import json
import logging
import statistics
import sys
import threading
import time
from pathlib import Path

import orjson

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from tests.support.documents import document_of_size

logger = logging.getLogger("baseline")


class PalShapedStorage:
    """The shape of pal's InMemoryStorage get/set: one lock, (value, deadline) tuples."""

    def __init__(self) -> None:
        self._store: dict[str, tuple[str, float]] = {}
        self._lock = threading.Lock()

    def setex(self, key: str, ttl: int, value: str) -> None:
        with self._lock:
            self._store[key] = (value, time.time() + ttl)
            logger.debug(f"Stored key {key} with TTL {ttl}s")

    def get(self, key: str):
        with self._lock:
            if key in self._store:
                value, expires_at = self._store[key]
                if time.time() < expires_at:
                    logger.debug(f"Retrieved key {key}")
                    return value
                del self._store[key]
        return None


def compare_ns(baseline, candidate, n: int, repeats: int) -> tuple[float, float, float]:
    """Median ns per call of each and median ratio of a repeat's two; they alternate so drift hits both alike.

    Timed in this thread's CPU time, so that other work on the machine
    taking the core away does not count.
    """
    base, cand = [], []
    for _ in range(repeats):
        for fn, out in ((baseline, base), (candidate, cand)):
            started = time.thread_time_ns()
            for _ in range(n):
                fn()
            out.append((time.thread_time_ns() - started) / n)
    ratios = [c / b for b, c in zip(base, cand)]
    return statistics.median(base), statistics.median(cand), statistics.median(ratios)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--code", type=Path, help="the checkout whose library to measure")
    parser.add_argument("--iterations", type=int, help="calls per repeat of a 0.5 KB operation (200000)")
    parser.add_argument("--repeats", type=int, help="alternating repeats of each comparison (7)")
    args = parser.parse_args()
    n, repeats = (2_000, 3) if args.quick else (200_000, 7)
    n, repeats = args.iterations or n, args.repeats or repeats
    if args.code:
        sys.path.insert(0, str(args.code.resolve()))
    from utils.infrastructure.backends.memory_storage import InMemoryStorage
    from utils.infrastructure.contract.validation import validate_set

    key = "thread:0b6f8a4e-3d1c-4a7e-9a57-1f2e3d4c5b6a"
    pal, ours = PalShapedStorage(), InMemoryStorage()
    small = document_of_size(5_000)
    pal.setex(key, 3600, small)
    ours.setex(key, 3600, small)

    rows = []
    rows.append(("get (hit)", "pal-shaped get", *compare_ns(lambda: pal.get(key), lambda: ours.get(key), n, repeats)))
    missing = "thread:missing"
    rows.append(("get (miss)", "pal-shaped get",
                 *compare_ns(lambda: pal.get(missing), lambda: ours.get(missing), n, repeats)))

    for label, size in (("5 KB", 5_000), ("50 KB", 50_000), ("250 KB", 250_000), ("2 MB", 2_000_000)):
        value = document_of_size(size)
        m = max(20, n // max(1, size // 500))
        def store(value: str = value) -> None:
            ours.setex(key, 3600, value)

        rows.append((f"set {label}", "json.loads",
                     *compare_ns(lambda value=value: json.loads(value), store, m, repeats)))
        rows.append((f"set {label}", "orjson.loads",
                     *compare_ns(lambda value=value: orjson.loads(value), store, m, repeats)))
    ours.close()

    limit = ours.max_value_bytes
    for size in (1_000, 5_000, 50_000, 500_000):
        value = document_of_size(size)
        m = max(20, n // max(1, size // 500))

        def validate(value: str = value) -> None:
            validate_set(key, 3600, value, None, None, limit)

        rows.append((f"validate {len(value) / 1000:.1f} KB", "json.loads",
                     *compare_ns(lambda value=value: json.loads(value), validate, m, repeats)))

    print(f"{'operation':<18} {'baseline':<16} {'baseline':>12} {'this library':>14} {'ratio':>7}")
    for operation, baseline, base_ns, mine_ns, ratio in rows:
        print(f"{operation:<18} {baseline:<16} {_fmt(base_ns):>12} {_fmt(mine_ns):>14} {ratio:>6.2f}x")


def _fmt(ns: float) -> str:
    return f"{ns / 1000:.2f} µs" if ns < 1_000_000 else f"{ns / 1e6:.2f} ms"


if __name__ == "__main__":
    main()
