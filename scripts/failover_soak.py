#!/usr/bin/env python3
"""Soak the failover layer: daemons writing through outages and kills, then check every key.

N daemon processes write through the public API (``get_storage()``, set up by
environment variables) to keys they all share: sets with a long lifetime, sets
that expire in a few seconds, and deletes. Some keys are used all along; most
belong to an epoch of a few seconds and are left alone after it, so that their
final state is what an outage or a replay made of them. Meanwhile the store is
killed (``pg_ctl -m immediate``) and restarted, and daemons are killed with
SIGKILL and replaced by a new process on the same spool. At the end the store
is up, one last process per spool replays what is left, and every key must
hold exactly its last acknowledged state, read straight from Postgres and
through ``get()``. With ``--backend supabase`` the daemons go through the RPC
gateway of tests/support, which stays up while Postgres behind it is down.

"Last acknowledged" needs one order per key across processes: a daemon holds
a per-key flock around each call and, under it, takes a number from a shared
counter. It logs the op (fsync'ed) before the call and its acknowledgement
after it; an op logged but never acknowledged (its daemon was killed) may or
may not have happened, so either outcome is accepted for it until a later
acknowledged op on the key. A set whose expiry falls within MARGIN seconds of
the check is "ambiguous": present or absent are both fine.

Replays are counted from the server's log of completed statements
(log_min_duration_statement=0): the statistics views would be simpler, but an
immediate shutdown resets them. A replay call whose parameters equal an
earlier one's replays the same spooled write again: a duplicate.

    python scripts/failover_soak.py --daemons 3 --seconds 120 --outages 5 --kills 5 [--shared-spool]

Prints a table and one JSON line; exits 1 if a key was lost, stale,
resurrected or corrupt, a spool was not fully replayed, or a daemon crashed.
"""

from __future__ import annotations

import argparse
import fcntl
import json
import os
import random
import re
import shutil
import signal
import sqlite3
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

LONG_TTL = 3600
SHORT_TTLS = (2, 6)
#: Server and daemons share this machine's clock, but a write is stamped somewhere inside its call.
MARGIN = 2.0
ABSENT = "absent"
OWN_PREFIXES = ("CONVERSATION_", "SUPABASE_", "DATABASE_URL")


def pick_key(rng: random.Random, keys: int, epoch: int) -> str:
    # A third of the ops go to keys shared by the whole run; the rest to the keys of the current
    # epoch, left alone once it is over: their final state is what happened around it (an outage,
    # a replay), not what later steady writing made of it.
    if rng.random() < 1 / 3:
        return f"thread:soak-all-{rng.randrange(keys)}"
    return f"thread:soak-{epoch}-{rng.randrange(keys)}"


# -- the daemon ---------------------------------------------------------------------------

_stopping = False


def _stop(signum, frame) -> None:
    global _stopping
    _stopping = True  # finish the op under way: killing mid-call is the controller's job


class Ledger:
    """The per-key locks, the shared sequence counter and this process's append-only log."""

    def __init__(self, run_dir: Path, name: str) -> None:
        self.locks = run_dir / "locks"
        self.counter = os.open(run_dir / "seq", os.O_RDWR | os.O_CREAT)
        self.log = os.open(run_dir / "logs" / f"{name}.jsonl", os.O_WRONLY | os.O_CREAT | os.O_APPEND)
        self._lock_files: dict[str, int] = {}

    def lock(self, key: str) -> int:
        fd = self._lock_files.get(key)
        if fd is None:
            fd = self._lock_files[key] = os.open(self.locks / key.replace(":", "_"), os.O_RDWR | os.O_CREAT)
        fcntl.flock(fd, fcntl.LOCK_EX)
        return fd

    def next_seq(self) -> int:
        fcntl.flock(self.counter, fcntl.LOCK_EX)
        try:
            seq = int(os.pread(self.counter, 20, 0) or b"0") + 1
            os.pwrite(self.counter, b"%020d" % seq, 0)  # one fixed-width write: a kill cannot tear it
            return seq
        finally:
            fcntl.flock(self.counter, fcntl.LOCK_UN)

    def write(self, record: dict) -> None:
        os.write(self.log, (json.dumps(record) + "\n").encode())
        os.fsync(self.log)


def daemon(run_dir: str, name: str, keys: int, epoch_seconds: float, began: float, seed: int) -> None:
    from utils.infrastructure.failover_storage import FailoverStorage
    from utils.infrastructure.storage_backend import get_storage

    signal.signal(signal.SIGTERM, _stop)
    signal.signal(signal.SIGINT, _stop)
    parent = os.getppid()
    ledger = Ledger(Path(run_dir), name)
    storage = get_storage()
    if not isinstance(storage, FailoverStorage):
        sys.exit(f"get_storage() gave {type(storage).__name__}, not a FailoverStorage: writes would not be spooled")
    ledger.write({"start": time.time(), "pid": os.getpid(), "state": storage.status()["state"]})
    rng = random.Random(seed)
    while not _stopping and os.getppid() == parent:  # an orphan stops too
        key = pick_key(rng, keys, int((time.time() - began) / epoch_seconds))
        roll = rng.random()
        op, ttl = ("delete", None) if roll < 0.25 else ("set", rng.randint(*SHORT_TTLS) if roll < 0.5 else LONG_TTL)
        fd = ledger.lock(key)
        try:
            seq = ledger.next_seq()
            value = json.dumps({"seq": seq, "by": name}) if op == "set" else None
            ledger.write({"seq": seq, "key": key, "op": op, "ttl": ttl, "by": name, "t0": time.time()})
            try:
                if op == "set":
                    storage.setex(key, ttl, value)
                else:
                    storage.delete(key)
            except Exception as exc:  # noqa: BLE001 (not acknowledged: the check treats it as uncertain)
                ledger.write({"seq": seq, "t1": time.time(), "error": f"{type(exc).__name__}: {exc}"})
            else:
                ledger.write({"seq": seq, "t1": time.time(), "state": storage.status()["state"]})
        finally:
            fcntl.flock(fd, fcntl.LOCK_UN)
        time.sleep(rng.uniform(0, 0.03))
    storage.close()


def final(timeout: float) -> None:
    """Open the spool once more and wait until it is replayed; print its status."""
    from utils.infrastructure.storage_backend import get_storage

    storage = get_storage()
    healthy = storage.wait_until_healthy(timeout)
    status = storage.status()
    storage.close()
    print(json.dumps({"healthy": healthy, "pending": status["pending"], "state": status["state"]}))


# -- the store ----------------------------------------------------------------------------

class Store:
    """Postgres, with the RPC gateway in front for ``supabase``; an outage stops Postgres."""

    def __init__(self, backend: str, run_dir: Path) -> None:
        from tests.support.database import PG_CRON_SETTINGS
        from tests.support.postgres_server import PostgresServer

        self.backend = backend
        self.run_dir = run_dir
        self.gateway: subprocess.Popen | None = None
        logged = {"log_min_duration_statement": "0"}
        if backend == "supabase":
            self.server = PostgresServer(superuser="supabase_admin", settings={**PG_CRON_SETTINGS, **logged})
        else:
            self.server = PostgresServer(settings=logged)
        self.up = False

    def start(self) -> dict[str, str]:
        """Start it; return the environment that points the library at it."""
        from tests.support.database import AUTHENTICATOR_PASSWORD, apply_sql, prepare_supabase_database
        from tests.support.local_supabase import JWT_SECRET
        from tests.support.postgres_server import PASSWORD, free_port

        self.server.start()
        self.up = True
        if self.backend == "postgres":
            with self.server.connect() as conn:
                apply_sql(conn)
            return {"CONVERSATION_STORAGE_BACKEND": "postgres",
                    "DATABASE_URL": self.server.dsn_for("postgres", password=PASSWORD)}
        with self.server.connect() as admin:
            prepare_supabase_database(admin)
        with self.server.connect(user="postgres") as owner:
            apply_sql(owner)
        # It stays up through the outages, as Supabase's API does when its database is down.
        port = free_port()
        dsn = self.server.dsn_for("postgres", user="authenticator", password=AUTHENTICATOR_PASSWORD)
        with open(self.run_dir / "gateway.err", "w") as err:
            self.gateway = subprocess.Popen(
                [sys.executable, "-m", "tests.support.rpc_gateway", "--port", str(port), "--jwt-secret", JWT_SECRET,
                 "--dsn", dsn], cwd=ROOT, stdout=subprocess.PIPE, stderr=err, text=True)
        self.gateway.stdout.readline()  # it listens; then the project's keys, one name=value a line
        keys = dict(self.gateway.stdout.readline().strip().split("=", 1) for _ in range(4))
        return {"CONVERSATION_STORAGE_BACKEND": "supabase", "SUPABASE_URL": f"http://127.0.0.1:{port}",
                "SUPABASE_KEY": keys["secret_key"]}

    def stop(self) -> None:
        self.server.stop("immediate")
        self.up = False

    def restart(self) -> None:
        self.server.start_process()
        self.up = True

    def rows(self) -> tuple[dict[str, tuple[object, float]], float]:
        """Every visible document and the server's time of its last write, read directly; and when."""
        with self.server.connect() as conn:
            before = time.time()
            rows = conn.execute(
                "select thread_id, conversation_data, expires_at > now(), extract(epoch from updated_at)::float8"
                " from public.conversation_threads").fetchall()
            at = (before + time.time()) / 2
        return {key: (data, written) for key, data, live, written in rows if live}, at

    def replay_calls(self) -> tuple[int, int]:
        """(completed replay calls, how many repeated an earlier call's parameters) from the server log."""
        calls, seen, repeated = 0, set(), 0
        replay = False
        with open(self.server.logfile, errors="replace") as log:
            for line in log:
                if "LOG:  duration: " in line:
                    replay = bool(re.search(r"ms  execute [^:]*: .*thread_replay", line))
                    calls += replay
                elif replay and "DETAIL:  parameters: " in line:
                    params = line.split("DETAIL:  parameters: ", 1)[1]
                    repeated += params in seen
                    seen.add(params)
                    replay = False
        return calls, repeated

    def close(self) -> None:
        try:
            if self.gateway is not None:
                self.gateway.kill()
                self.gateway.wait()
        finally:
            self.server.cleanup()


# -- the check ----------------------------------------------------------------------------

@dataclass
class Op:
    seq: int
    key: str
    op: str
    ttl: int | None
    by: str
    t0: float
    t1: float | None = None
    state: str | None = None
    error: str | None = None

    @property
    def acked(self) -> bool:
        return self.t1 is not None and self.error is None

    def outcomes(self, now: float) -> set:
        """What the key may hold at ``now`` if this op was the last to take effect."""
        if self.op == "delete":
            return {ABSENT}
        if not self.acked:
            return {self.seq, ABSENT}  # when it took effect is unknown
        if now < self.t0 + self.ttl - MARGIN:
            return {self.seq}
        if now > self.t1 + self.ttl + MARGIN:
            return {ABSENT}
        return {self.seq, ABSENT}


def load_ops(run_dir: Path) -> dict[str, list[Op]]:
    ops: dict[int, Op] = {}
    for path in (run_dir / "logs").glob("*.jsonl"):
        for line in path.read_text().splitlines():
            try:
                record = json.loads(line)
            except ValueError:
                continue  # torn by a kill: never acknowledged
            if "key" in record:
                ops[record["seq"]] = Op(record["seq"], record["key"], record["op"], record["ttl"], record["by"],
                                        record["t0"])
            elif "seq" in record:
                op = ops[record["seq"]]
                op.t1, op.state, op.error = record["t1"], record.get("state"), record.get("error")
    by_key: dict[str, list[Op]] = {}
    for op in sorted(ops.values(), key=lambda o: o.seq):
        by_key.setdefault(op.key, []).append(op)
    return by_key


def observed(document: object) -> object:
    """A read's answer as the seq of the op that wrote it, ABSENT, or the foreign text itself."""
    if document is None:
        return ABSENT
    if isinstance(document, str):
        try:
            document = json.loads(document)
        except ValueError:
            return document
    if isinstance(document, dict) and isinstance(document.get("seq"), int) and "by" in document:
        return document["seq"]
    return json.dumps(document)


def verdict(ops: list[Op], seen: object, now: float) -> str:
    acked = [op for op in ops if op.acked]
    last = acked[-1] if acked else None
    expected = last.outcomes(now) if last else {ABSENT}
    allowed = set(expected)
    for op in ops:
        if last is None or op.seq > last.seq:  # unacknowledged, after the last acknowledged op
            allowed |= op.outcomes(now)
    if seen in allowed:
        return "ambiguous" if len(expected) > 1 else "ok"
    if seen == ABSENT:
        return "lost"
    if last is None or seen not in {op.seq for op in ops}:
        return "corrupt"
    return "stale" if last.seq in expected else "resurrected"


FAILURES = ("lost", "stale", "resurrected", "corrupt")


def check(run_dir: Path, store: Store, env: dict[str, str], began: float) -> tuple[dict, list[str]]:
    from utils.infrastructure.storage_backend import get_storage

    ops = load_ops(run_dir)
    direct, direct_at = store.rows()
    names = sorted(set(ops) | set(direct))
    os.environ.update({**env, "CONVERSATION_SPOOL_PATH": str(run_dir / "check-spool.sqlite3")})
    storage = get_storage()
    api_at = time.time()
    api = {key: storage.get(key) for key in names}
    api_at = (api_at + time.time()) / 2
    storage.close()
    counts = dict.fromkeys(FAILURES + ("ambiguous",), 0)
    failing = []
    for key in names:
        history = ops.get(key, [])
        seen = (observed(direct.get(key, (None,))[0]), observed(api.get(key)))
        verdicts = (verdict(history, seen[0], direct_at), verdict(history, seen[1], api_at))
        worst = next((v for v in verdicts if v in FAILURES), verdicts[0])
        if worst in counts:
            counts[worst] += 1
        if worst in FAILURES:
            failing.append((key, worst, seen, history, direct.get(key, (None, None))[1]))
    every = [op for history in ops.values() for op in history]
    short = [op for op in every if op.acked and op.op == "set" and op.ttl != LONG_TTL]
    counts.update(
        keys=len(names),
        acked_sets=sum(op.acked and op.op == "set" for op in every),
        acked_deletes=sum(op.acked and op.op == "delete" for op in every),
        acked_while_not_healthy=sum(op.acked and op.state != "healthy" for op in every),
        expired_sets=sum(op.t1 + op.ttl + MARGIN < direct_at for op in short),
        unacknowledged=sum(op.t1 is None for op in every),
        raised=sum(op.error is not None for op in every),
    )
    return counts, [describe(*failure, began) for failure in failing]


# -- the run ------------------------------------------------------------------------------

class Run:
    def __init__(self, opts: argparse.Namespace) -> None:
        self.opts = opts
        self.rng = random.Random(opts.seed)
        self.dir = Path(tempfile.mkdtemp(prefix="failover-soak-"))
        (self.dir / "logs").mkdir()
        (self.dir / "locks").mkdir()
        self.store = Store(opts.backend, self.dir)
        self.daemons: dict[int, subprocess.Popen] = {}
        self.generation = dict.fromkeys(range(opts.daemons), 0)
        self.started: list[subprocess.Popen] = []
        self.events: list[str] = []
        self.crashes = 0
        self.env: dict[str, str] = {}
        self.t0 = time.time()

    def spool(self, slot: int) -> Path:
        return self.dir / ("spool.sqlite3" if self.opts.shared_spool else f"spool-{slot}.sqlite3")

    def child(self, args: list[str], spool: Path, **kwargs) -> subprocess.Popen:
        environ = {k: v for k, v in os.environ.items() if not k.startswith(OWN_PREFIXES)}
        environ.update(self.env, CONVERSATION_SPOOL_PATH=str(spool), CONVERSATION_STORAGE_TIMEOUT_SECONDS="1")
        # cwd: no .env file of the user's is in reach there.
        process = subprocess.Popen([sys.executable, __file__, *args], env=environ, cwd=self.dir, **kwargs)
        self.started.append(process)
        return process

    def spawn(self, slot: int) -> None:
        name = f"{slot}.{self.generation[slot]}"
        with open(self.dir / "logs" / f"{name}.err", "w") as err:
            self.daemons[slot] = self.child(
                ["daemon", str(self.dir), name, str(self.opts.keys), str(self.opts.epoch), repr(self.t0),
                 str(self.rng.randrange(2**32))],
                self.spool(slot), stdout=subprocess.DEVNULL, stderr=err)

    def at(self, label: str) -> None:
        self.events.append(f"{time.time() - self.t0:6.1f}s {label}")

    def wait_until(self, moment: float) -> None:
        """Sleep until ``moment``, replacing any daemon that died on its own meanwhile."""
        while (left := moment - time.time()) > 0:
            time.sleep(min(left, 0.2))
            for slot, process in self.daemons.items():
                if process.poll() is not None:
                    self.crashes += 1
                    self.at(f"daemon {slot}.{self.generation[slot]} exited by itself ({process.returncode})")
                    self.generation[slot] += 1
                    self.spawn(slot)

    def schedule(self) -> list[tuple[float, str, int]]:
        opts, rng = self.opts, self.rng
        events = []
        # Outages in the middle of the run, each in a window of its own that leaves the daemons time
        # to probe the store, find it back and replay (their probes back off: 1, 2, 4 s...).
        begin, end = 0.1 * opts.seconds, 0.8 * opts.seconds
        window = (end - begin) / max(opts.outages, 1)
        for i in range(opts.outages):
            length = rng.uniform(min(1.5, window / 4), min(5.0, window * 0.4))
            start = begin + i * window + rng.uniform(0, window * 0.6 - length)
            events += [(start, "down", -1), (start + length, "up", -1)]
        events += [(rng.uniform(0.05, 0.9) * opts.seconds, "kill", rng.randrange(opts.daemons))
                   for _ in range(opts.kills)]
        return sorted(events)

    def soak(self) -> tuple[dict, list[str]]:
        opts = self.opts
        self.env = self.store.start()
        self.t0 = time.time()
        for slot in range(opts.daemons):
            self.spawn(slot)
        outages = kills = 0
        for moment, kind, slot in self.schedule():
            self.wait_until(self.t0 + moment)
            if kind == "down":
                self.store.stop()
                outages += 1
                self.at("store stopped (immediate)")
            elif kind == "up":
                self.store.restart()
                self.at("store restarted")
            else:
                self.daemons[slot].kill()
                self.daemons[slot].wait()
                kills += 1
                self.at(f"daemon {slot}.{self.generation[slot]} killed")
                self.generation[slot] += 1
                self.spawn(slot)
        self.wait_until(self.t0 + opts.seconds)
        if not self.store.up:
            self.store.restart()
        for process in self.daemons.values():
            process.send_signal(signal.SIGTERM)
        for slot, process in self.daemons.items():
            try:
                process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                process.kill()
                self.at(f"daemon {slot} did not stop within 30 s: killed")
        self.at("daemons stopped")
        unreplayed = self.replay_spools()
        self.at("spools replayed")
        counts, failing = check(self.dir, self.store, self.env, self.t0)
        replay_calls, duplicates = self.store.replay_calls()
        counts.update(
            backend=opts.backend, spool="shared" if opts.shared_spool else "per daemon", daemons=opts.daemons,
            seconds=opts.seconds, seed=opts.seed, outages=outages, kills=kills,
            crashes=self.crashes, spooled_writes=spooled_writes(self.dir), replay_calls=replay_calls,
            duplicates=duplicates, unreplayed=unreplayed,
        )
        return counts, failing

    def replay_spools(self) -> int:
        """One last process per spool waits until it is replayed; return the writes left."""
        spools = sorted({self.spool(slot) for slot in range(self.opts.daemons)})
        finals = [self.child(["final"], spool, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
                  for spool in spools]
        left = 0
        for spool, process in zip(spools, finals):
            out, err = process.communicate(timeout=120)
            try:
                status = json.loads(out.strip().splitlines()[-1])
            except (ValueError, IndexError):
                status = {"pending": None, "healthy": False}
            if not status["healthy"] or status["pending"] != 0:
                self.at(f"{spool.name} not replayed: {status} {err.strip()[-500:]}")
                left += status["pending"] or 1
        return left

    def close(self) -> None:
        for process in self.started:
            if process.poll() is None:
                process.kill()
                process.wait()
        try:
            if self.opts.keep and self.store.server.logfile.exists():
                shutil.copy(self.store.server.logfile, self.dir / "postgres.log")
            self.store.close()
        finally:
            if self.opts.keep:
                print(f"run directory kept: {self.dir}", file=sys.stderr)
            else:
                shutil.rmtree(self.dir, ignore_errors=True)


def spooled_writes(run_dir: Path) -> int:
    """Every write ever spooled: the spool's ids come from AUTOINCREMENT and are never reused."""
    total = 0
    for path in run_dir.glob("spool*.sqlite3"):
        with sqlite3.connect(f"file:{path}?mode=ro", uri=True) as conn:
            row = conn.execute("select seq from sqlite_sequence where name = 'spooled_writes'").fetchone()
        total += row[0] if row else 0
    return total


def describe(key: str, what: str, seen: tuple, history: list[Op], written: float | None, t0: float) -> str:
    """A failing key, with the ops that matter: from the value it holds (or the last few) onwards."""
    shown = " / ".join(f"{source} holds {'nothing' if s == ABSENT else s}" for source, s in zip(("postgres", "api"), seen))
    if written is not None:
        shown += f"; the row was last written at {written - t0:.2f} s"
    held = [s for s in seen if isinstance(s, int)]
    start = min(held) if held else 0
    first = min((op.seq for op in history if op.seq >= start), default=0)
    lines = [f"{key}: {what} ({shown})", "     seq   t0 (s)   t1 (s)  daemon  op      ttl  outcome"]
    for op in [op for op in history if op.seq >= first][-25:]:
        outcome = op.state if op.acked else ("error: " + op.error if op.error else "not acknowledged (killed)")
        t1 = f"{op.t1 - t0:8.2f}" if op.t1 else "       -"
        lines.append(f"  {op.seq:6d} {op.t0 - t0:8.2f} {t1}  {op.by:>6}  {op.op:6} {op.ttl or '':>5}  {outcome}")
    return "\n".join(lines)


def report(figures: dict) -> None:
    rows = [
        ("backend / spool", f"{figures['backend']} / {figures['spool']}"),
        ("daemons, keys, seconds", f"{figures['daemons']}, {figures['keys']}, {figures['seconds']}"),
        ("acknowledged sets / deletes", f"{figures['acked_sets']} / {figures['acked_deletes']}"),
        ("  acknowledged while not healthy", figures["acked_while_not_healthy"]),
        ("  short-lived sets expired", figures["expired_sets"]),
        ("unacknowledged (killed mid-op) / raised", f"{figures['unacknowledged']} / {figures['raised']}"),
        ("outages / kills / crashes", f"{figures['outages']} / {figures['kills']} / {figures['crashes']}"),
        ("spooled writes / replay calls", f"{figures['spooled_writes']} / {figures['replay_calls']}"),
        ("duplicate replays", figures["duplicates"]),
        ("left unreplayed", figures["unreplayed"]),
        ("lost / stale / resurrected / corrupt",
         " / ".join(str(figures[name]) for name in FAILURES)),
        ("ambiguous (near expiry)", figures["ambiguous"]),
        ("wall time", f"{figures['wall_seconds']} s"),
    ]
    for label, value in rows:
        print(f"{label:38} {value}")


def main() -> int:
    if sys.argv[1:2] == ["daemon"]:
        run_dir, name, keys, epoch, began, seed = sys.argv[2:8]
        daemon(run_dir, name, int(keys), float(epoch), float(began), int(seed))
        return 0
    if sys.argv[1:2] == ["final"]:
        final(timeout=90)
        return 0
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--daemons", type=int, default=3)
    parser.add_argument("--seconds", type=float, default=120)
    parser.add_argument("--outages", type=int, default=5)
    parser.add_argument("--kills", type=int, default=5)
    parser.add_argument("--backend", choices=("postgres", "supabase"), default="postgres")
    parser.add_argument("--shared-spool", action="store_true", help="one spool file for every daemon")
    parser.add_argument("--keys", type=int, help="keys per epoch, and keys kept all along (default: 2 per daemon)")
    parser.add_argument("--epoch", type=float, default=3.0, help="seconds before the daemons move to new keys")
    parser.add_argument("--seed", type=int, default=None)
    parser.add_argument("--keep", action="store_true", help="keep the run directory (logs, spools)")
    opts = parser.parse_args()
    opts.keys = opts.keys or 2 * opts.daemons
    opts.seed = random.randrange(2**31) if opts.seed is None else opts.seed
    # Terminated like interrupted: through the cleanup, so no server outlives the run.
    signal.signal(signal.SIGTERM, lambda signum, frame: sys.exit(128 + signum))
    began = time.time()
    run = Run(opts)
    try:
        figures, failing = run.soak()
    except KeyboardInterrupt:
        print("interrupted: everything it started is stopped", file=sys.stderr)
        return 130
    finally:
        run.close()
    figures["wall_seconds"] = round(time.time() - began, 1)
    report(figures)
    print("\ntimeline:\n  " + "\n  ".join(run.events))
    if failing:
        print(f"\n{len(failing)} failing keys (times from the start, as in the timeline):")
        for text in failing:
            print(text)
    print(json.dumps(figures))
    bad = sum(figures[name] for name in FAILURES) + figures["unreplayed"] + figures["crashes"]
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
