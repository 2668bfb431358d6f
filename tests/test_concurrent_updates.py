"""update() across processes: several daemons adding turns to one thread lose none."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from tests.support.database import PROJECT_ROOT
from tests.support.environment import clean_environ

WORKER = """
import json, sys
from utils.infrastructure.storage_backend import get_storage
name = sys.argv[1]
storage = get_storage()
def append(turn):
    def fn(current):
        thread = json.loads(current) if current else {"turns": []}
        thread["turns"].append(turn)
        return json.dumps(thread)
    return fn
for i in range(20):
    storage.update("thread:shared", append(f"{name}-{i}"), 3600)
print("ok")
"""


@pytest.mark.parametrize("backend", ["sqlite", "postgres", "supabase"])
def test_three_processes_add_turns_to_one_thread_and_none_is_lost(backend, request, tmp_path):
    env = {**clean_environ(), "CONVERSATION_STORAGE_BACKEND": backend, "CONVERSATION_STORAGE_STRICT": "true"}
    if backend == "sqlite":
        env["CONVERSATION_SQLITE_PATH"] = str(tmp_path / "t.sqlite3")
    elif backend == "postgres":
        env["DATABASE_URL"] = request.getfixturevalue("postgres_dsn")
    else:
        project = request.getfixturevalue("supabase_project")
        env.update(SUPABASE_URL=project.url, SUPABASE_KEY=project.secret_key)
    workers = [
        subprocess.Popen([sys.executable, "-c", WORKER, name], cwd=PROJECT_ROOT, env=env,
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        for name in ("a", "b", "c")
    ]
    outputs = [w.communicate(timeout=120) for w in workers]
    assert [w.returncode for w in workers] == [0, 0, 0], outputs

    reader = subprocess.run(
        [sys.executable, "-c", ("from utils.infrastructure.storage_backend import get_storage;"
                                "print(get_storage().get('thread:shared'))")],
        cwd=PROJECT_ROOT, env=env, capture_output=True, text=True, timeout=60, check=False,
    )
    turns = json.loads(reader.stdout)["turns"]
    assert sorted(turns) == sorted(f"{n}-{i}" for n in "abc" for i in range(20))
