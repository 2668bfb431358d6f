"""Timing: per-call latencies, percentiles, throughput."""

from __future__ import annotations

import statistics
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field


@dataclass
class Result:
    group: str
    name: str
    samples_us: list[float] = field(repr=False)
    baseline: str | None = None  # name of the result this one is compared with
    round_trips: float | None = None  # per operation, counted at the server
    note: str = ""

    def pct(self, q: float) -> float:
        ordered = sorted(self.samples_us)
        return ordered[min(len(ordered) - 1, int(q / 100 * len(ordered)))]

    @property
    def p50(self) -> float:
        return self.pct(50)

    @property
    def p90(self) -> float:
        return self.pct(90)

    @property
    def p99(self) -> float:
        return self.pct(99)

    @property
    def ops_per_s(self) -> float:
        return 1e6 / statistics.mean(self.samples_us)


def time_calls(fn: Callable[[int], object], n: int, warmup: int = 3) -> list[float]:
    """Microseconds per call of ``fn(i)`` for i in range(n)."""
    for i in range(warmup):
        fn(i)
    samples = []
    clock = time.perf_counter_ns
    for i in range(n):
        started = clock()
        fn(i)
        samples.append((clock() - started) / 1000)
    return samples


def throughput(fn: Callable[[int], object], threads: int, seconds: float) -> float:
    """Operations per second of ``threads`` threads calling ``fn`` for ``seconds``."""
    counts = [0] * threads
    stop = threading.Event()

    def worker(slot: int) -> None:
        i = 0
        while not stop.is_set():
            fn(slot * 1_000_000 + i)
            i += 1
        counts[slot] = i

    workers = [threading.Thread(target=worker, args=(t,)) for t in range(threads)]
    started = time.perf_counter()
    for w in workers:
        w.start()
    time.sleep(seconds)
    stop.set()
    for w in workers:
        w.join()
    return sum(counts) / (time.perf_counter() - started)
