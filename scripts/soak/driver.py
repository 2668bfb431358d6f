"""The run: the store, the daemons, the outages and kills on a schedule, then the check.

With the container slot on, daemon slot 0 runs as PID 1 of a PID namespace of
its own (``unshare --pid --fork --kill-child``), as a daemon in a container
does; a kill of it SIGKILLs the unshare process, which takes PID 1 with it,
and the next incarnation is PID 1 again on the same spool.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import signal
import sqlite3
import subprocess
import sys
import tempfile
import time
from contextlib import closing
from pathlib import Path

from scripts.soak import checker, history
from scripts.soak.store import ROOT, Store

SCRIPT = ROOT / "scripts" / "failover_soak.py"
OWN_PREFIXES = ("CONVERSATION_", "SUPABASE_", "DATABASE_URL")
CONTAINER = ("unshare", "--pid", "--fork", "--kill-child", "--mount-proc")
CONTAINER_SLOT = 0


def container_works() -> str | None:
    """None if a daemon can run as PID 1 of its own namespace here; otherwise why not."""
    try:
        result = subprocess.run([*CONTAINER, sys.executable, "-c", "import os; print(os.getpid())"],
                                check=False, capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired) as exc:
        return str(exc)
    return None if result.stdout.strip() == "1" else (result.stderr.strip() or result.stdout.strip())


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
        self.crashes = self.outages = self.kills = 0
        self.env: dict[str, str] = {}
        self.t0 = time.time()
        # The daemons hold the read end; its EOF tells them the controller is gone.
        self.alive_r, self.alive_w = os.pipe()

    def spool(self, slot: int) -> Path:
        return self.dir / ("spool.sqlite3" if self.opts.shared_spool else f"spool-{slot}.sqlite3")

    def contained(self, slot: int) -> bool:
        return self.opts.container_slot and slot == CONTAINER_SLOT

    def child(self, args: list[str], spool: Path, prefix: tuple[str, ...] = (), **kwargs) -> subprocess.Popen:
        environ = {k: v for k, v in os.environ.items() if not k.startswith(OWN_PREFIXES)}
        environ.update(self.env, CONVERSATION_SPOOL_PATH=str(spool), CONVERSATION_STORAGE_TIMEOUT_SECONDS="1")
        # cwd: no .env file of the user's is in reach there.
        process = subprocess.Popen([*prefix, sys.executable, str(SCRIPT), *args], env=environ, cwd=self.dir,
                                   **kwargs)
        self.started.append(process)
        return process

    def spawn(self, slot: int) -> None:
        name = f"{slot}.{self.generation[slot]}"
        config = {"run_dir": str(self.dir), "name": name, "keys": self.opts.keys, "epoch": self.opts.epoch,
                  "began": self.t0, "seed": self.rng.randrange(2**32), "alive_fd": self.alive_r}
        with open(self.dir / "logs" / f"{name}.err", "w") as err:
            self.daemons[slot] = self.child(
                ["daemon", json.dumps(config)], self.spool(slot), CONTAINER if self.contained(slot) else (),
                stdout=subprocess.DEVNULL, stderr=err, pass_fds=(self.alive_r,))

    def daemon_pid(self, slot: int) -> int:
        """The daemon's pid here: in the container slot, unshare's one child."""
        process = self.daemons[slot]
        if self.contained(slot):
            try:
                children = Path(f"/proc/{process.pid}/task/{process.pid}/children").read_text().split()
            except OSError:
                children = []
            if children:
                return int(children[0])
        return process.pid

    def kill(self, slot: int) -> None:
        pid = self.daemon_pid(slot)
        process = self.daemons[slot]
        process.kill()
        process.wait()
        # --kill-child sends PID 1 its SIGKILL as unshare dies: wait for it to be gone too, so that
        # no op of the dead incarnation ends after its successor starts.
        deadline = time.time() + 5
        while _running(pid) and time.time() < deadline:
            time.sleep(0.01)

    def await_replay(self, slot: int, until: float) -> bool:
        """Wait until some process replays the slot's spool (it claims entries), at most ``until``."""
        while time.time() < until:
            if _claimed(self.spool(slot)):
                return True
            time.sleep(0.01)
        return False

    def await_started(self, until: float) -> None:
        """Wait until every daemon now running has opened its storage, at most ``until``.

        On a loaded machine a daemon started late in the run may still be importing when the
        run ends; stopping it then would leave its restart unchecked (it has not done a thing).
        """
        for slot, generation in self.generation.items():
            ledger = self.dir / "logs" / f"{slot}.{generation}.jsonl"
            while time.time() < until and '"start"' not in _text(ledger):
                time.sleep(0.05)

    def at(self, label: str) -> None:
        self.events.append(f"{time.time() - self.t0:6.1f}s {label}")

    def replace(self, slot: int, why: str) -> None:
        self.at(f"daemon {slot}.{self.generation[slot]}{' (PID 1)' if self.contained(slot) else ''} {why}")
        self.generation[slot] += 1
        self.spawn(slot)

    def wait_until(self, moment: float) -> None:
        """Sleep until ``moment``, replacing any daemon that died on its own meanwhile."""
        while (left := moment - time.time()) > 0:
            time.sleep(min(left, 0.2))
            for slot, process in self.daemons.items():
                if process.poll() is not None:
                    self.crashes += 1
                    self.replace(slot, f"exited by itself ({process.returncode})")

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
        kills = [(rng.uniform(0.05, 0.9) * opts.seconds, "kill", rng.randrange(opts.daemons))
                 for _ in range(opts.kills)]
        if opts.container_slot and kills:
            # Every run restarts the container, preferably while it replays after an outage: its
            # successor, PID 1 again, must take over the entries the dead one had claimed.
            ups = [moment for moment, kind, _ in events if kind == "up"]
            moment = rng.choice(ups) + 0.1 if ups else kills[0][0]
            kills[rng.randrange(len(kills))] = (moment, "kill-replaying" if ups else "kill", CONTAINER_SLOT)
        return sorted(events + kills)

    def soak(self) -> tuple[dict, list[checker.Failure]]:
        opts = self.opts
        self.env = self.store.start()
        self.t0 = time.time()
        for slot in range(opts.daemons):
            self.spawn(slot)
        events = self.schedule()
        for i, (moment, kind, slot) in enumerate(events):
            self.wait_until(self.t0 + moment)
            # A kill that waits for a replay does not wait past the next event.
            until = min([moment + 6.0, opts.seconds, *[m for m, _, _ in events[i + 1:i + 2]]])
            self.happen(kind, slot, self.t0 + until)
        self.wait_until(self.t0 + opts.seconds)
        if not self.store.up:
            self.store.restart()
        self.await_started(time.time() + 60)
        self.stop_daemons()
        unreplayed = self.replay_spools()
        self.at("spools replayed")
        figures, failures = self.check()
        replay_calls, duplicates = self.store.replay_calls()
        figures.update(
            backend=opts.backend, spool="shared" if opts.shared_spool else "per daemon", daemons=opts.daemons,
            seconds=opts.seconds, seed=opts.seed, outages=self.outages, kills=self.kills,
            crashes=self.crashes,
            spooled_writes=spooled_writes(self.dir), replay_calls=replay_calls, duplicates=duplicates,
            unreplayed=unreplayed,
        )
        return figures, failures

    def happen(self, kind: str, slot: int, until: float) -> None:
        if kind == "down":
            self.store.stop()
            self.outages += 1
            self.at("store stopped (immediate)")
        elif kind == "up":
            self.store.restart()
            self.at("store restarted")
        else:
            why = "killed"
            if kind == "kill-replaying":
                why += " while replaying" if self.await_replay(slot, until) else " (no replay seen)"
            self.kill(slot)
            self.kills += 1
            self.replace(slot, why)

    def stop_daemons(self) -> None:
        # unshare does not pass SIGTERM on: signal the container's PID 1 itself.
        for slot in self.daemons:
            try:
                os.kill(self.daemon_pid(slot), signal.SIGTERM)
            except ProcessLookupError:
                pass  # it died just now: wait() collects it
        for slot, process in self.daemons.items():
            try:
                process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                process.kill()
                self.at(f"daemon {slot} did not stop within 30 s: killed")
        self.at("daemons stopped")

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

    def check(self) -> tuple[dict, list[checker.Failure]]:
        from utils.infrastructure.storage_backend import get_storage

        direct, direct_at = self.store.rows()
        past = history.load(self.dir, time.time())
        models, figures, failures = checker.walk(past)
        os.environ.update({**self.env, "CONVERSATION_SPOOL_PATH": str(self.dir / "check-spool.sqlite3")})
        storage = get_storage()
        api_at = time.time()
        api = {key: storage.get(key) for key in sorted(set(models) | set(direct))}
        api_at = (api_at + time.time()) / 2
        storage.close()
        final_figures, final_failures = checker.check_final(past, models, direct, direct_at, api, api_at)
        figures.update(final_figures, keys=len(set(models) | set(direct)))
        figures.update(checker.op_figures(past, direct_at))
        contained = [i for i in past.incarnations.values() if i.name.startswith(f"{CONTAINER_SLOT}.")]
        figures.update(
            container_restarts=max(len(contained) - 1, 0) if self.opts.container_slot else 0,
            container_not_pid1=sum(i.pid != 1 for i in contained) if self.opts.container_slot else 0,
        )
        return figures, failures + final_failures

    def close(self) -> None:
        for process in self.started:
            if process.poll() is None:
                process.kill()
                process.wait()
        os.close(self.alive_w)
        os.close(self.alive_r)
        try:
            if self.opts.keep and self.store.server.logfile.exists():
                shutil.copy(self.store.server.logfile, self.dir / "postgres.log")
            self.store.close()
        finally:
            if self.opts.keep:
                print(f"run directory kept: {self.dir}", file=sys.stderr)
            else:
                shutil.rmtree(self.dir, ignore_errors=True)


def _running(pid: int) -> bool:
    """Whether ``pid`` still runs (a zombie has let go of its files and locks)."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except (OSError, IndexError):
        return False


def _claimed(spool: Path) -> bool:
    """Whether entries of ``spool`` are claimed for a replay (in either of the spool's claim layouts)."""
    if not spool.exists():
        return False
    for query in ("select count(*) from spool_claims",
                  "select count(*) from spooled_writes where claimed_by is not null"):
        try:
            with closing(sqlite3.connect(f"file:{spool}?mode=ro", uri=True, timeout=0.2)) as conn:
                return conn.execute(query).fetchone()[0] > 0
        except sqlite3.Error:
            continue
    return False


def spooled_writes(run_dir: Path) -> int:
    """Every write ever spooled: the spool's ids come from AUTOINCREMENT and are never reused."""
    total = 0
    for path in run_dir.glob("spool*.sqlite3"):
        with closing(sqlite3.connect(f"file:{path}?mode=ro", uri=True)) as conn:
            row = conn.execute("select seq from sqlite_sequence where name = 'spooled_writes'").fetchone()
        total += row[0] if row else 0
    return total


def _text(path: Path) -> str:
    try:
        return path.read_text()
    except OSError:
        return ""
