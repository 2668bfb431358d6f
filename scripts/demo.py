#!/usr/bin/env python3
"""A conversation thread outlives the process that wrote it, with no server.

    pip install -e . && python scripts/demo.py

One process writes a thread as pal-mcp-server does and exits; a second,
fresh process reads it back and adds a turn; a third reads the result and
deletes it. Uses CONVERSATION_STORAGE_BACKEND when set; otherwise an SQLite
file in a temporary directory.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import uuid
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def write(key: str) -> None:
    from utils.infrastructure.storage_backend import get_storage, load_settings

    storage = get_storage()
    thread = {"thread_id": key, "tool_name": "chat", "turns": [{"role": "user", "content": "Review my diff"}]}
    storage.setex(key, load_settings().ttl_seconds, json.dumps(thread))
    print(f"[process {os.getpid()}] stored {key} in {storage.backend_name}, exiting")


def continue_thread(key: str) -> None:
    from utils.infrastructure.storage_backend import get_storage, load_settings

    storage = get_storage()
    text = storage.get(key)
    if text is None:
        print(f"[process {os.getpid()}] {key} is gone: {storage.backend_name} does not survive a restart")
        sys.exit(1)
    thread = json.loads(text)
    thread["turns"].append({"role": "assistant", "content": "Two threads append without a lock."})
    storage.setex(key, load_settings().ttl_seconds, json.dumps(thread))
    print(f"[process {os.getpid()}] read {key} written by another process; added turn {len(thread['turns'])}")


def finish(key: str) -> None:
    from utils.infrastructure.storage_backend import get_storage

    storage = get_storage()
    turns = json.loads(storage.get(key))["turns"]
    print(f"[process {os.getpid()}] read {len(turns)} turns: " + " / ".join(t["content"] for t in turns))
    print(f"[process {os.getpid()}] deleted: {storage.delete(key)}; read back: {storage.get(key)}")


STEPS = {"write": write, "continue": continue_thread, "finish": finish}


def main() -> int:
    if len(sys.argv) == 3:
        STEPS[sys.argv[1]](sys.argv[2])
        return 0
    env = dict(os.environ)
    with tempfile.TemporaryDirectory() as tmp:
        if not env.get("CONVERSATION_STORAGE_BACKEND"):
            env["CONVERSATION_STORAGE_BACKEND"] = "sqlite"
            env["CONVERSATION_SQLITE_PATH"] = str(Path(tmp) / "threads.sqlite3")
            print(f"storage: SQLite file {env['CONVERSATION_SQLITE_PATH']}", flush=True)
        key = f"thread:{uuid.uuid4()}"
        for step in STEPS:
            result = subprocess.run([sys.executable, __file__, step, key], env=env, check=False)
            if result.returncode != 0:
                return result.returncode
    return 0


if __name__ == "__main__":
    sys.exit(main())
