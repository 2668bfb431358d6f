"""Threads outlive the process that wrote them (real processes, real exits)."""

from __future__ import annotations

import subprocess
import sys
import uuid

from tests.support.database import PROJECT_ROOT
from tests.support.environment import clean_environ

WRITER = """
from utils.infrastructure.storage_backend import get_storage
storage = get_storage()
storage.setex({key!r}, 3600, '{{"turns": [{{"role": "user", "content": "hello"}}]}}')
print(storage.backend_name)
"""

READER = """
import json
from utils.infrastructure.storage_backend import get_storage
storage = get_storage()
print(json.dumps(json.loads(storage.get({key!r}))))
"""


def _run(code: str, env: dict[str, str]) -> str:
    result = subprocess.run(
        [sys.executable, "-c", code], cwd=PROJECT_ROOT, env=env, capture_output=True, text=True, timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    return result.stdout.strip()


def test_thread_written_by_one_process_is_read_by_the_next(supabase_project):
    env = {
        **clean_environ(),
        "CONVERSATION_STORAGE_BACKEND": "supabase",
        "SUPABASE_URL": supabase_project.url,
        "SUPABASE_KEY": supabase_project.secret_key,
        "CONVERSATION_STORAGE_STRICT": "true",
    }
    key = f"thread:{uuid.uuid4()}"
    assert _run(WRITER.format(key=key), env) == "supabase"
    assert _run(READER.format(key=key), env) == '{"turns": [{"role": "user", "content": "hello"}]}'
