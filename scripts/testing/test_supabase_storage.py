#!/usr/bin/env python3
"""Smoke test of the configured conversation storage.

Stores and reads back a thread, checks that a 5-second TTL expires, deletes a
thread. Uses the backend the environment (or .env) selects; when that is not
the backend actually in use (e.g. Supabase unreachable, memory fallback) the
test fails. Exit status 0 when every check passes, 1 otherwise.

    CONVERSATION_STORAGE_BACKEND=supabase SUPABASE_URL=... SUPABASE_KEY=... \\
        python scripts/testing/test_supabase_storage.py
"""

from __future__ import annotations

import json
import os
import sys
import time
import uuid
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from utils.infrastructure.contract.errors import StorageError
from utils.infrastructure.operations.settings import load_settings
from utils.infrastructure.storage_backend import create_storage

EXPIRY_SECONDS = 5


def main() -> int:
    failures = 0

    def check(name: str, ok: bool, detail: str = "") -> None:
        nonlocal failures
        failures += not ok
        print(f"{'PASS' if ok else 'FAIL'}  {name}{f'  ({detail})' if detail else ''}", flush=True)

    # The store itself is under test: no failover spool standing in for it.
    os.environ.setdefault("CONVERSATION_STORAGE_FAILOVER", "false")
    try:
        settings = load_settings()
        storage = create_storage(settings)
    except StorageError as exc:
        print(f"FAIL  configuration: {exc}")
        return 1

    with storage:
        check(
            f"backend is {settings.backend}",
            storage.backend_name == settings.backend,
            f"in use: {storage.backend_name}",
        )
        try:
            key = f"thread:smoke-{uuid.uuid4()}"
            document = {"thread_id": key, "turns": [{"role": "user", "content": "héllo ✓"}]}
            storage.setex(key, 60, json.dumps(document))
            stored = storage.get(key)
            check("store and retrieve", stored is not None and json.loads(stored) == document)

            short = f"thread:smoke-expiry-{uuid.uuid4()}"
            storage.setex(short, EXPIRY_SECONDS, '{"short": true}')
            check("readable before expiry", storage.get(short) is not None)
            time.sleep(EXPIRY_SECONDS + 0.5)
            check(f"gone after {EXPIRY_SECONDS} s", storage.get(short) is None)

            check("delete a live thread", storage.delete(key) is True)
            check("deleted thread is gone", storage.get(key) is None)
            check("second delete reports nothing removed", storage.delete(key) is False)
        except StorageError as exc:
            check("storage calls", False, f"{type(exc).__name__}: {exc}")

    print("all checks passed" if not failures else f"{failures} check(s) failed")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
