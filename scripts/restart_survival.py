#!/usr/bin/env python3
"""Prove that acknowledged writes survive a daemon being killed.

1. A writer process builds conversations turn by turn on the configured
   backend (get, append a turn, setex), and after every setex that returned
   it appends an acknowledgement line to a log file (flushed and fsynced).
2. Mid-stream the writer is killed with SIGKILL: no cleanup, no flush.
3. A fresh process checks every acknowledged write: each thread must hold
   at least every acknowledged turn, intact and in order (one more turn is
   fine: that write was in flight). It then continues each conversation.

Prints a summary; exits 1 on any loss, 2 on a configuration error. On the
memory backend loss is expected (the threads lived in the killed process):
it says so and exits 0.

    CONVERSATION_STORAGE_BACKEND=sqlite python scripts/restart_survival.py
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from utils.infrastructure.contract.errors import StorageError
from utils.infrastructure.operations.settings import load_settings


def turn_text(key: str, n: int) -> str:
    return f"turn {n} of {key}: " + hashlib.sha256(f"{key}/{n}".encode()).hexdigest()


def writer(log_path: str, run_id: str, threads: int) -> None:
    from utils.infrastructure.storage_backend import get_storage

    storage = get_storage()
    keys = [f"thread:survival-{run_id}-{i}" for i in range(threads)]
    with open(log_path, "a", encoding="utf-8") as log:
        turn = 0
        while True:
            turn += 1
            for key in keys:
                text = storage.get(key)
                thread = json.loads(text) if text else {"thread_id": key, "turns": []}
                thread["turns"].append({"role": "user" if turn % 2 else "assistant", "content": turn_text(key, turn)})
                storage.setex(key, 3600, json.dumps(thread))
                # Only now is the write acknowledged: record it durably.
                log.write(json.dumps({"key": key, "turns": turn}) + "\n")
                log.flush()
                os.fsync(log.fileno())


def verify(log_path: str) -> dict:
    from utils.infrastructure.storage_backend import get_storage

    acked: dict[str, int] = {}
    for line in Path(log_path).read_text(encoding="utf-8").splitlines():
        try:
            record = json.loads(line)
        except ValueError:
            continue  # a line torn by the kill was never acknowledged
        acked[record["key"]] = max(acked.get(record["key"], 0), record["turns"])

    storage = get_storage()
    lost, corrupt, continued = [], [], 0
    for key, turns in sorted(acked.items()):
        text = storage.get(key)
        if text is None:
            lost.append(f"{key}: missing (acknowledged {turns} turns)")
            continue
        stored = json.loads(text)["turns"]
        if len(stored) < turns:
            lost.append(f"{key}: {len(stored)} turns stored, {turns} acknowledged")
            continue
        expected = [turn_text(key, n) for n in range(1, len(stored) + 1)]
        if [t["content"] for t in stored] != expected or len(stored) > turns + 1:
            corrupt.append(key)
            continue
        thread = json.loads(text)
        thread["turns"].append({"role": "user", "content": "continued after the restart"})
        storage.setex(key, 3600, json.dumps(thread))
        if json.loads(storage.get(key))["turns"][-1]["content"] == "continued after the restart":
            continued += 1
        storage.delete(key)
    acked_writes = sum(acked.values())
    return {
        "backend": storage.backend_name,
        "threads": len(acked),
        "acknowledged_writes": acked_writes,
        "lost": lost,
        "corrupt": corrupt,
        "continued": continued,
    }


def run(threads: int, kill_after: float, as_json: bool) -> int:
    settings = load_settings()
    env = dict(os.environ)
    if settings.backend != "memory":
        env["CONVERSATION_STORAGE_STRICT"] = "true"  # a fallback to memory would prove nothing
    with tempfile.TemporaryDirectory() as tmp:
        log_path = str(Path(tmp) / "acks.jsonl")
        Path(log_path).touch()
        child = subprocess.Popen(
            [sys.executable, __file__, "--writer", log_path, "--run-id", uuid.uuid4().hex[:12],
             "--threads", str(threads)],
            env=env, stderr=subprocess.PIPE, text=True,
        )
        deadline = time.monotonic() + 60
        while Path(log_path).stat().st_size == 0:
            if child.poll() is not None or time.monotonic() > deadline:
                child.kill()
                print(f"the writer failed before its first write:\n{child.stderr.read()}", file=sys.stderr)
                return 2
            time.sleep(0.01)
        time.sleep(kill_after)
        os.kill(child.pid, signal.SIGKILL)
        child.wait()
        child.stderr.close()
        killed = child.returncode == -signal.SIGKILL

        checker = subprocess.run(
            [sys.executable, __file__, "--verify", log_path], env=env, capture_output=True, text=True, check=False
        )
        if checker.returncode != 0:
            print(f"the checking process failed:\n{checker.stderr}", file=sys.stderr)
            return 1
        summary = json.loads(checker.stdout)
    summary["writer_killed_with_sigkill"] = killed
    loss = bool(summary["lost"] or summary["corrupt"])
    memory = summary["backend"] == "memory"
    if as_json:
        print(json.dumps(summary))
    else:
        print(f"backend: {summary['backend']}; writer killed with SIGKILL: {killed}")
        print(f"acknowledged: {summary['acknowledged_writes']} writes to {summary['threads']} threads")
        print(f"lost: {len(summary['lost'])}; corrupt: {len(summary['corrupt'])}; "
              f"continued after restart: {summary['continued']}")
        for problem in summary["lost"] + summary["corrupt"]:
            print(f"  {problem}")
        if memory:
            print("memory backend: the threads lived inside the killed process, so their loss is expected; "
                  "set CONVERSATION_STORAGE_BACKEND to sqlite, postgres or supabase to keep them")
        else:
            print("RESULT: " + ("FAIL, acknowledged writes were lost" if loss else "PASS, nothing acknowledged was lost"))
    if memory:
        return 0
    return 1 if loss or not killed else 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=5, help="conversations written in parallel")
    parser.add_argument("--kill-after", type=float, default=1.5, help="seconds of writing before SIGKILL")
    parser.add_argument("--json", action="store_true")
    parser.add_argument("--writer", help=argparse.SUPPRESS)
    parser.add_argument("--run-id", help=argparse.SUPPRESS)
    parser.add_argument("--verify", help=argparse.SUPPRESS)
    args = parser.parse_args()
    try:
        if args.writer:
            writer(args.writer, args.run_id, args.threads)
            return 0
        if args.verify:
            print(json.dumps(verify(args.verify)))
            return 0
        return run(args.threads, args.kill_after, args.json)
    except StorageError as exc:
        print(f"error: {type(exc).__name__}: {exc}", file=sys.stderr)
        return 2 if isinstance(exc, ValueError) else 1


if __name__ == "__main__":
    sys.exit(main())
