"""Printing and writing benchmark results: a table, a markdown report, a chart."""

from __future__ import annotations

from pathlib import Path

from scripts.benchmarks.measure import Result


def _ratio(result: Result, by_name: dict[tuple[str, str], Result]) -> str:
    base = by_name.get((result.group, result.baseline or ""))
    if base is None:
        return ""
    return f"{result.p50 / base.p50:.2f}x {result.baseline}"


def _rows(results: list[Result]) -> list[list[str]]:
    by_name = {(r.group, r.name): r for r in results}
    rows = []
    for r in results:
        trips = "" if r.round_trips is None else f"{r.round_trips:.2f}"
        rows.append([r.group, r.name, f"{r.p50:,.1f}", f"{r.p90:,.1f}", f"{r.p99:,.1f}",
                     f"{r.ops_per_s:,.0f}", _ratio(r, by_name), trips])
    return rows


HEADER = ["group", "operation", "p50 µs", "p90 µs", "p99 µs", "ops/s", "p50 ratio to baseline", "round trips/op"]


def print_table(results: list[Result]) -> None:
    rows = [HEADER] + _rows(results)
    widths = [max(len(row[i]) for row in rows) for i in range(len(HEADER))]
    for row in rows:
        print("  ".join(cell.ljust(w) for cell, w in zip(row, widths)))


def write_markdown(path: Path, results: list[Result], cleanup: dict, concurrency: dict, machine: dict,
                   postgres_path: list[str]) -> None:
    lines = ["# Benchmark report", ""]
    lines += [f"- {k}: {v}" for k, v in machine.items()]
    lines += ["", "## PostgresStorage against the same SQL typed by hand (5 KB, alternating rounds)", ""]
    lines += ["Median of the rounds' p50s; see scripts/benchmarks/postgres_path.py.", ""]
    lines += postgres_path
    lines += ["", "## Every backend, by document size", ""]
    lines += ["", "Latencies per operation in microseconds; each ratio compares p50 with the baseline named,",
              "measured in the same run.", ""]
    lines += ["| " + " | ".join(HEADER) + " |", "|" + "---|" * len(HEADER)]
    lines += ["| " + " | ".join(row) + " |" for row in _rows(results)]
    lines += ["", "## Cleanup", ""]
    lines += [f"- {k}: {v}" for k, v in cleanup.items()]
    lines += ["", "## PostgresStorage throughput by threads (get, 5 KB)", ""]
    one = concurrency.get(1) or 1
    lines += [f"- {threads} threads: {ops:,} ops/s ({ops / one:.2f}x one thread)" for threads, ops in concurrency.items()]
    path.write_text("\n".join(lines) + "\n")


def write_chart(path: Path, results: list[Result]) -> Path | None:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return None
    groups = [g for g in dict.fromkeys(r.group for r in results) if g.endswith("document")]
    names = ["memory get", "sqlite get", "postgres get", "postgres, no cache get", "supabase get",
             "psycopg select row", "redis GET", "memory set", "sqlite set", "postgres set",
             "postgres, no cache set", "supabase set", "psycopg upsert", "redis SET EX"]
    by_name = {(r.group, r.name): r for r in results}
    fig, ax = plt.subplots(figsize=(12, 5))
    width = 0.8 / len(groups)
    present = [n for n in names if any((g, n) in by_name for g in groups)]
    for gi, group in enumerate(groups):
        values = [by_name[(group, n)].p50 if (group, n) in by_name else 0 for n in present]
        ax.bar([i + gi * width for i in range(len(present))], values, width, label=group)
    ax.set_xticks([i + width * (len(groups) - 1) / 2 for i in range(len(present))])
    ax.set_xticklabels(present, rotation=30, ha="right")
    ax.set_yscale("log")
    ax.set_ylabel("p50 latency (µs, log scale)")
    ax.set_title("Conversation storage: p50 latency by operation and document size")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path
