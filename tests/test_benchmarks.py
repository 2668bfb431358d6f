"""The benchmark's quick mode keeps working (figures are printed, never asserted)."""

from __future__ import annotations

import json
import subprocess
import sys

from tests.support.database import PROJECT_ROOT


def test_quick_benchmark_writes_its_report(tmp_path):
    result = subprocess.run(
        [sys.executable, "scripts/benchmarks/run.py", "--quick", "--out", str(tmp_path)],
        cwd=PROJECT_ROOT, capture_output=True, text=True, timeout=600, check=False,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    report = (tmp_path / "report.md").read_text()
    for section in ("## Cleanup", "## PostgresStorage throughput by threads", "| round trips | supabase get |",
                    "## PostgresStorage against the same SQL typed by hand", "| postgres set, no cache | raw upsert |"):
        assert section in report
    data = json.loads((tmp_path / "results.json").read_text())
    assert data["machine"]["cpus"] >= 1 and data["machine"]["postgres"]
    compared = {(r["operation"], r["baseline"]) for r in data["postgres_path"]["ratios"]}
    assert ("postgres get, near cache", "raw select") in compared and ("postgres set, near cache", "raw upsert") in compared
    sets = {r["name"]: r["baseline"] for r in data["results"] if r["group"] == "5KB document"}
    assert sets["postgres set"] == sets["supabase set"] == "psycopg upsert"
    trips = {r["name"]: r["round_trips"] for r in data["results"] if r["round_trips"] is not None}
    assert set(trips) == {"postgres get", "postgres set", "supabase get", "supabase set"}
    assert all(0.9 < v < 1.2 for v in trips.values()), trips  # one round trip per operation, counted
    assert data["cleanup"]["deleted"] == data["cleanup"]["expired_rows"]
    assert (tmp_path / "chart.png").stat().st_size > 10_000


def test_quick_path_costs_split_each_call_into_client_and_server_cpu():
    result = subprocess.run(
        [sys.executable, "scripts/benchmarks/path_costs.py", "--quick"],
        cwd=PROJECT_ROOT, capture_output=True, text=True, timeout=300, check=False,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    rows = {line.split(" | ")[0].strip("| "): line for line in result.stdout.splitlines() if line.startswith("| ")}
    for call in ("raw select", "get, no cache (thread_get)", "get, near cache (thread_fetch)", "raw upsert",
                 "set (thread_put)", "thread_get without its search_path", "thread_put's statement typed by hand",
                 "set: the number rule alone", "both: deadline watch start + finish"):
        assert call in rows, result.stdout
    client, server = (float(cell) for cell in rows["set (thread_put)"].strip("| ").split(" | ")[1:3])
    assert client > 0 and server >= 0
    # pgbench's figures: a write's statement takes longer than a read's.
    get, put = (float(rows[name].strip("| ").split(" | ")[1]) for name in ("thread_get", "thread_put"))
    assert 0 < get < put, result.stdout


def test_quick_replay_lookup_times_a_replay_against_the_sweeps():
    result = subprocess.run(
        [sys.executable, "scripts/benchmarks/replay_lookup.py", "--quick"],
        cwd=PROJECT_ROOT, capture_output=True, text=True, timeout=300, check=False,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    rows = [line for line in result.stdout.splitlines() if line.startswith("| 1")]
    assert [row.split(" | ")[0] for row in rows] == ["| 10,000"], result.stdout
    assert rows[0].count(" ms (") == 2, result.stdout
