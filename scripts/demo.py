#!/usr/bin/env python3
"""A conversation thread's life in the configured storage, with no server needed.

    pip install -e . && python scripts/demo.py

Uses CONVERSATION_STORAGE_BACKEND (memory unless set): write a thread as
pal-mcp-server does, add a turn, read it back, delete it.
"""

from __future__ import annotations

import json
import logging
import sys
import uuid
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from utils.infrastructure.storage_backend import get_storage, load_settings  # noqa: E402


def main() -> None:
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(message)s")
    settings = load_settings()
    storage = get_storage()
    key = f"thread:{uuid.uuid4()}"

    thread = {"thread_id": key, "tool_name": "chat", "turns": [{"role": "user", "content": "Review my diff"}]}
    storage.setex(key, settings.ttl_seconds, json.dumps(thread))
    print(f"stored   {key} for {settings.timeout_hours:g} h in {storage.backend_name}")

    thread = json.loads(storage.get(key))
    thread["turns"].append({"role": "assistant", "content": "Two threads append without a lock."})
    storage.setex(key, settings.ttl_seconds, json.dumps(thread))
    print(f"added    turn 2; read back {len(json.loads(storage.get(key))['turns'])} turns")

    print(f"deleted  {storage.delete(key)}; read back {storage.get(key)}")
    storage.close()


if __name__ == "__main__":
    main()
