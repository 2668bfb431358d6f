"""A soak daemon: random operations through ``get_storage()``, each one in the ledger.

"Last acknowledged" needs one order per key across processes: a daemon holds
the flock of every key an operation touches (an erase: all its user's keys,
taken in sorted order) and, under it, takes a number from a shared counter.
It logs the op (fsync'ed) before the call and its outcome after it, with the
failover layer's state before and after; a read logs what it got.
"""

from __future__ import annotations

import fcntl
import json
import os
import random
import select
import signal
import sys
import time
from pathlib import Path

from scripts.soak.workload import Plan, appender, document, plan

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


def _controller_alive(fd: int) -> bool:
    # The controller holds the pipe's other end: EOF means it is gone. A pid would not do: as
    # PID 1 of a namespace of its own, a daemon has no parent it can see.
    return not select.select([fd], [], [], 0)[0]


def _state(storage) -> str:
    return storage.status()["state"]


def _call(storage, step: Plan, seq: int, name: str):
    key = step.keys[0]
    if step.op == "get":
        return storage.get(key)
    if step.op == "set":
        return storage.setex(key, step.ttl, document(seq, name, [seq]))  # pal's call: no user
    if step.op == "uset":
        return storage.set_with_ttl(key, step.ttl, document(seq, name, [seq]), user_id=step.user)
    if step.op == "update":
        return storage.update(key, appender(seq, name), step.ttl)
    if step.op == "delete":
        return storage.delete(key)
    return storage.delete_user_threads(step.user)


def _perform(storage, ledger: Ledger, step: Plan, seq: int, name: str) -> None:
    before = _state(storage)
    ledger.write({"seq": seq, "op": step.op, "keys": list(step.keys), "ttl": step.ttl, "user": step.user,
                  "by": name, "t0": time.time(), "s0": before})
    try:
        answer = _call(storage, step, seq, name)
    except Exception as exc:  # noqa: BLE001 (not acknowledged: the check treats it as uncertain)
        ledger.write({"seq": seq, "t1": time.time(), "error": f"{type(exc).__name__}: {exc}"})
        return
    done = {"seq": seq, "t1": time.time(), "s1": _state(storage)}
    if step.op == "get":
        done["value"] = answer
    ledger.write(done)


def daemon(config: dict) -> None:
    from utils.infrastructure.failover.failover_storage import FailoverStorage
    from utils.infrastructure.storage_backend import get_storage

    signal.signal(signal.SIGTERM, _stop)
    signal.signal(signal.SIGINT, _stop)
    name = config["name"]
    ledger = Ledger(Path(config["run_dir"]), name)
    storage = get_storage()
    if not isinstance(storage, FailoverStorage):
        sys.exit(f"get_storage() gave {type(storage).__name__}, not a FailoverStorage: "
                 "writes would not be spooled")
    ledger.write({"start": time.time(), "pid": os.getpid(), "spool": os.environ["CONVERSATION_SPOOL_PATH"],
                  "state": _state(storage)})
    rng = random.Random(config["seed"])
    while not _stopping and _controller_alive(config["alive_fd"]):
        step = plan(rng, config["keys"], int((time.time() - config["began"]) / config["epoch"]))
        fds = [ledger.lock(key) for key in step.keys]
        try:
            _perform(storage, ledger, step, ledger.next_seq(), name)
        finally:
            for fd in reversed(fds):
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
