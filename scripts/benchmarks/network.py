#!/usr/bin/env python3
"""Time pal-shaped conversation exchanges through a shaped network.

    python scripts/benchmarks/network.py                   # all profiles, 2/10/50 turns
    python scripts/benchmarks/network.py --quick           # a test's worth, under a minute
    python scripts/benchmarks/network.py --cache both      # near cache off and on, side by side
    python scripts/benchmarks/network.py --profiles "WAN 30 ms" --turns 10 50 --out DIR

pal-mcp-server rewrites the whole thread on every turn. One exchange is what
a daemon does for one user message: get the thread, then add the user's turn
and the assistant's turn, each a get, an append and a setex of the whole
thread (TTL 3 h), as pal's add_turn does. Each backend reaches its server
through a ShapingProxy (network_proxy.py: delay, bandwidth, byte and round
trip counts), so the figures show what the network costs, not loopback.
Writes network_report.md, network_results.json and network_chart.png.
"""

from __future__ import annotations

import argparse
import inspect
import json
import os
import platform
import statistics
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from psycopg.conninfo import make_conninfo

from scripts.benchmarks.network_proxy import PROFILES, ShapingProxy
from scripts.benchmarks.stack import Stack
from tests.support.documents import conversation_document
from utils.infrastructure.backends.postgres_storage import PostgresStorage
from utils.infrastructure.backends.supabase_storage import SupabaseStorage

TTL = 3 * 3600  # pal's CONVERSATION_TIMEOUT_HOURS
CHARS_PER_TURN = 5300  # about 5.5 KB per turn once wrapped, as in pal's threads: 50 turns ≈ 276 KB
CALLS_PER_EXCHANGE = 5  # get; get + setex; get + setex
BACKENDS = {"postgres": PostgresStorage, "supabase": SupabaseStorage}


def _dump(thread: dict) -> str:
    # Like pydantic's model_dump_json: compact, and UTF-8 rather than \u escapes.
    return json.dumps(thread, separators=(",", ":"), ensure_ascii=False)


def pal_thread(turns: int) -> tuple[str, list[dict]]:
    """A thread of ``turns`` turns as pal stores it, and the user and assistant turns that follow."""
    thread = json.loads(conversation_document(turns + 2, CHARS_PER_TURN))
    following = thread["turns"][turns:]
    del thread["turns"][turns:]
    return _dump(thread), following


def add_turn(storage, key: str, turn: dict) -> None:
    """pal's add_turn: the whole thread read, one turn appended, the whole thread written."""
    thread = json.loads(storage.get(key))
    now = datetime.now(UTC).isoformat()
    thread["turns"].append(dict(turn, timestamp=now))
    thread["last_updated_at"] = now
    storage.setex(key, TTL, _dump(thread))


def exchange(storage, key: str, user_turn: dict, assistant_turn: dict) -> None:
    json.loads(storage.get(key))  # the tool rebuilds the conversation for the model
    add_turn(storage, key, user_turn)
    add_turn(storage, key, assistant_turn)


def measure(storage, proxy: ShapingProxy, turns: int, exchanges: int, budget: float) -> dict:
    thread, (user_turn, assistant_turn) = pal_thread(turns)
    key = f"thread:{json.loads(thread)['thread_id']}"
    seconds, counts = [], []
    started = time.monotonic()
    while len(seconds) < exchanges and (len(seconds) < 3 or time.monotonic() - started < budget):
        # Back to N turns before each exchange, so every one moves the same sizes.
        storage.setex(key, TTL, thread)
        proxy.reset()
        t0 = time.perf_counter()
        exchange(storage, key, user_turn, assistant_turn)
        seconds.append(time.perf_counter() - t0)
        counts.append(proxy.counters())
    profile = proxy.profile
    median = statistics.median(seconds)
    trips = statistics.median(c.round_trips for c in counts)
    sent = statistics.median(c.bytes_to_server for c in counts)
    received = statistics.median(c.bytes_to_client for c in counts)
    return {
        "profile": profile.name, "rtt_ms": profile.rtt * 1000, "bandwidth_mbit": profile.bandwidth / 1e6,
        "turns": turns, "thread_bytes": len(thread.encode()), "exchanges": len(seconds),
        "median_ms": median * 1000, "samples_ms": [round(s * 1000, 3) for s in seconds],
        "round_trips": trips, "round_trips_each": [c.round_trips for c in counts],
        "bytes_sent": sent, "bytes_received": received,
        "moved_pct": 100 * (sent + received) / len(thread.encode()),
        "wall_over_rtts": median / (trips * profile.rtt) if trips else None,
    }


def warm_up(storage, n: int) -> None:
    """Opens the pool or HTTP connection, and gets psycopg past its prepare threshold."""
    thread, (user_turn, assistant_turn) = pal_thread(2)
    key = "thread:network-warm-up"
    storage.setex(key, TTL, thread)
    for _ in range(n):
        exchange(storage, key, user_turn, assistant_turn)


def cache_options(mode: str) -> dict | None:
    """Keyword arguments for ``near_cache`` (a new cache each call); None when this library version has none."""
    accepts = all("near_cache" in inspect.signature(cls).parameters for cls in BACKENDS.values())
    if accepts:
        if mode == "off":
            return {"near_cache": False}
        # The proxy listens on loopback, for which the default is no cache:
        # give the storages the cache a server across a network gets by default.
        from utils.infrastructure.remote.near_cache import NearCache

        return {"near_cache": NearCache()}
    return {} if mode == "off" else None


# -- output ----------------------------------------------------------------

COLUMNS = [  # result key, heading, format (bytes shown in KB of 1000)
    ("backend", "backend", "{}"), ("cache", "cache", "{}"), ("profile", "profile", "{}"),
    ("turns", "turns", "{}"), ("thread_bytes", "thread KB", "{:,.1f}"), ("exchanges", "exchanges", "{}"),
    ("median_ms", "median ms", "{:,.1f}"),
    ("round_trips", "round trips", "{:g}"), ("bytes_sent", "sent KB", "{:,.1f}"),
    ("bytes_received", "received KB", "{:,.1f}"), ("moved_pct", "moved % of thread", "{:,.0f}"),
    ("wall_over_rtts", "wall ÷ (trips × RTT)", "{:.2f}"),
]


def _cell(row: dict, key: str, fmt: str) -> str:
    value = row[key]
    if value is None:
        return ""
    if key == "round_trips" and len(set(row["round_trips_each"])) > 1:
        return f"{value:g} ({min(row['round_trips_each'])}–{max(row['round_trips_each'])})"
    return fmt.format(value / 1000 if key.startswith(("bytes", "thread_bytes")) else value)


def rows_of(cells: list[dict]) -> list[list[str]]:
    return [[h for _, h, _ in COLUMNS]] + [[_cell(c, k, f) for k, _, f in COLUMNS] for c in cells]


def comparison(cells: list[dict]) -> list[list[str]]:
    """Near cache off and on side by side, for --cache both."""
    on = {(c["backend"], c["profile"], c["turns"]): c for c in cells if c["cache"] == "on"}
    rows = [["backend", "profile", "turns", "median ms off", "on", "off ÷ on", "round trips off", "on",
             "moved % off", "on"]]
    for c in cells:
        d = on.get((c["backend"], c["profile"], c["turns"]))
        if c["cache"] != "off" or d is None:
            continue
        rows.append([c["backend"], c["profile"], str(c["turns"]), f"{c['median_ms']:,.1f}",
                     f"{d['median_ms']:,.1f}", f"{c['median_ms'] / d['median_ms']:.2f}x",
                     f"{c['round_trips']:g}", f"{d['round_trips']:g}", f"{c['moved_pct']:,.0f}",
                     f"{d['moved_pct']:,.0f}"])
    return rows


def print_rows(rows: list[list[str]]) -> None:
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    for row in rows:
        print("  ".join(cell.ljust(w) for cell, w in zip(row, widths)))


def markdown(rows: list[list[str]]) -> list[str]:
    return ["| " + " | ".join(rows[0]) + " |", "|" + "---|" * len(rows[0])] + ["| " + " | ".join(r) + " |"
                                                                             for r in rows[1:]]


def write_report(path: Path, cells: list[dict], info: dict) -> None:
    lines = ["# Conversation exchanges over a shaped network", ""]
    lines += [f"- {k}: {v}" for k, v in info.items()]
    lines += ["", "One exchange, as pal-mcp-server makes it for one message: get the thread, then",
              "get + setex for the user's turn and get + setex for the assistant's (whole thread each",
              "time). The thread is reset to N turns (untimed) before each exchange. Bytes and round",
              "trips are counted by the proxy (sent = client to server); medians over the exchanges.",
              "\"wall ÷ (trips × RTT)\" is 1 when latency alone explains the time; the rest is bandwidth,",
              "the servers and the client's own work. The proxy models delay and bandwidth only (no slow",
              "start, loss or jitter): real links are slower.", ""]
    if any(c["cache"] == "on" for c in cells) and any(c["cache"] == "off" for c in cells):
        lines += ["## Near cache off (before) and on (after)", ""] + markdown(comparison(cells)) + [""]
    lines += ["## All figures", ""] + markdown(rows_of(cells))
    path.write_text("\n".join(lines) + "\n")


def write_chart(path: Path, cells: list[dict]) -> Path | None:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return None
    profiles = list(dict.fromkeys(c["profile"] for c in cells))
    # Each backend's off and on next to each other.
    series = sorted(dict.fromkeys((c["backend"], c["cache"]) for c in cells),
                    key=lambda s: (s[0], s[1] != "off"))
    fig, axes = plt.subplots(1, len(profiles), figsize=(5 * len(profiles), 4.5), squeeze=False)
    for ax, profile in zip(axes[0], profiles):
        mine = [c for c in cells if c["profile"] == profile]
        turns = sorted({c["turns"] for c in mine})
        width = 0.8 / len(series)
        for si, (backend, cache) in enumerate(series):
            ms = {c["turns"]: c["median_ms"] for c in mine if (c["backend"], c["cache"]) == (backend, cache)}
            bars = ax.bar([i + si * width for i in range(len(turns))], [ms.get(t, 0) for t in turns], width,
                          label=f"{backend}, near cache {cache}")
            ax.bar_label(bars, fmt="%.0f", fontsize=7)
        ax.axhline(CALLS_PER_EXCHANGE * mine[0]["rtt_ms"], color="grey", linestyle=":",
                   label=f"{CALLS_PER_EXCHANGE} × RTT")
        ax.set_xticks([i + width * (len(series) - 1) / 2 for i in range(len(turns))])
        ax.set_xticklabels([f"{t} turns" for t in turns])
        ax.set_title(profile)
        ax.set_ylabel("median ms per exchange")
    axes[0][0].legend(fontsize="small")
    fig.suptitle("pal exchange (get; get+setex; get+setex) over a shaped network")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


# -- run -------------------------------------------------------------------

def _names(values: list[str]) -> list[str]:
    return [v.strip() for value in values for v in value.split(",") if v.strip()]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="3 exchanges a cell, for tests")
    parser.add_argument("--profiles", nargs="+", default=list(PROFILES), help=f"of {', '.join(PROFILES)}")
    parser.add_argument("--turns", nargs="+", default=["2", "10", "50"], help="thread lengths")
    parser.add_argument("--exchanges", type=int, help="timed exchanges a cell (default 9, quick 3)")
    parser.add_argument("--budget", type=float, default=15.0,
                        help="seconds a cell may take before it stops at 3 exchanges or more")
    parser.add_argument("--cache", choices=("off", "on", "both"), default="off",
                        help="the storages' near_cache keyword: off, on, or both side by side")
    parser.add_argument("--out", default=str(Path(__file__).resolve().parents[2] / "benchmarks"))
    args = parser.parse_args()
    profiles = _names(args.profiles)
    unknown = [p for p in profiles if p not in PROFILES]
    if unknown:
        parser.error(f"unknown profiles {unknown}; known: {list(PROFILES)}")
    turns = [int(t) for t in _names(args.turns)]
    exchanges = args.exchanges or (3 if args.quick else 9)
    modes = ["off", "on"] if args.cache == "both" else [args.cache]
    options = {mode: cache_options(mode) for mode in modes}
    if any(o is None for o in options.values()):
        print(f"--cache {args.cache}: this version of the library has no near cache (PostgresStorage and "
              "SupabaseStorage take no near_cache keyword). Use --cache off.", file=sys.stderr)
        return 2
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)

    started = time.monotonic()
    cells: list[dict] = []
    stack = Stack()
    try:
        gateway_port = int(stack.supabase_url.rsplit(":", 1)[1])
        with ShapingProxy(stack.postgres.port, profiles[0]) as pg_proxy, \
                ShapingProxy(gateway_port, profiles[0]) as gw_proxy:
            proxies = {"postgres": pg_proxy, "supabase": gw_proxy}
            for mode in modes:
                storages = {
                    # transaction_pooler=False: the proxy's port says nothing about a pooler.
                    "postgres": PostgresStorage(make_conninfo(stack.dsn, port=pg_proxy.port),
                                                transaction_pooler=False, **cache_options(mode)),
                    "supabase": SupabaseStorage(f"http://127.0.0.1:{gw_proxy.port}", stack.secret_key,
                                                **cache_options(mode)),
                }
                try:
                    for name in profiles:
                        for proxy in proxies.values():
                            proxy.profile = PROFILES[name]
                        for backend, storage in storages.items():
                            warm_up(storage, 2 if args.quick else 3)
                            for n in turns:
                                cell = measure(storage, proxies[backend], n, exchanges, args.budget)
                                cells.append({"backend": backend, "cache": mode, **cell})
                                print(f"{backend:8} cache {mode:3} {name:10} {n:3} turns: "
                                      f"{cell['median_ms']:9.1f} ms, {cell['round_trips']:g} round trips",
                                      flush=True)
                finally:
                    for storage in storages.values():
                        storage.close()
        postgres_version = stack.postgres_version
    finally:
        stack.close()

    info = {
        "date": datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "cpus": os.cpu_count(), "platform": platform.platform(), "python": platform.python_version(),
        "postgres": postgres_version, "mode": "quick" if args.quick else "full",
        "exchanges per cell": f"up to {exchanges} (at least 3; fewer past {args.budget:g} s a cell)",
        "profiles": "; ".join(f"{p.name}: RTT {p.rtt * 1000:g} ms, {p.bandwidth / 1e6:g} Mbit/s"
                              for p in PROFILES.values() if p.name in profiles),
        "seconds": round(time.monotonic() - started, 1),
    }
    print()
    print_rows(rows_of(cells))
    if len(modes) == 2:
        print()
        print_rows(comparison(cells))
    write_report(out / "network_report.md", cells, info)
    (out / "network_results.json").write_text(json.dumps({"machine": info, "results": cells}, indent=1))
    chart = write_chart(out / "network_chart.png", cells)
    print(f"\nreport: {out / 'network_report.md'}, chart: {chart or 'not drawn (no matplotlib)'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
