"""EX-AI-MCP-Server's storage module as the README gives it, probed as EX-AI's health check probes it.

The README's block becomes ``utils/infrastructure/storage_backend.py`` of a
``utils.infrastructure`` package of the daemon's own, run in a fresh process
next to the installed library. The probe is our own code in the shape of
EX-AI's health check: it imports ``InMemoryStorage`` and ``RedisStorage``
to name the backend, writes the text ``"test_value"`` for 5 s and reads it back.
"""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from tests.support.doc_blocks import fenced_block
from tests.support.environment import daemon_environ

PROBE = '''\
import json

from utils.infrastructure.storage_backend import InMemoryStorage, RedisStorage, get_storage_backend

storage = get_storage_backend()
if isinstance(storage, InMemoryStorage):
    kind = "memory"
elif isinstance(storage, RedisStorage):
    kind = "redis"
else:
    kind = "unknown"
storage.set_with_ttl("__health_check_test__", 5, "test_value")
print(json.dumps({"kind": kind, "backend": storage.backend_name, "read": storage.get("__health_check_test__")}))
'''


def readme_shim() -> str:
    return fenced_block("README.md", "python", "RedisStorage")


@pytest.fixture
def daemon(tmp_path):
    """A daemon directory with EX-AI's package layout: utils/infrastructure/storage_backend.py from the README."""
    package = tmp_path / "daemon" / "utils" / "infrastructure"
    package.mkdir(parents=True)
    (package.parent / "__init__.py").write_text('"""The daemon\'s own utils."""\n')
    (package / "__init__.py").write_text('"""The daemon\'s own infrastructure."""\n')
    (package / "storage_backend.py").write_text(readme_shim())
    (package.parent.parent / "health_probe.py").write_text(PROBE)
    return package.parent.parent


def _probe(daemon, tmp_path, **settings: str) -> dict:
    env = daemon_environ(tmp_path / "data", settings)
    result = subprocess.run([sys.executable, "health_probe.py"], cwd=daemon, env=env, check=False,
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


def test_the_probe_runs_on_memory(daemon, tmp_path):
    assert _probe(daemon, tmp_path, CONVERSATION_STORAGE_BACKEND="memory") == {
        "kind": "memory", "backend": "memory", "read": "test_value"}


def test_the_probe_runs_on_sqlite(daemon, tmp_path):
    answer = _probe(daemon, tmp_path, CONVERSATION_STORAGE_BACKEND="sqlite",
                    CONVERSATION_SQLITE_PATH=str(tmp_path / "threads.sqlite3"))
    assert answer == {"kind": "redis", "backend": "sqlite", "read": "test_value"}


def test_the_probe_runs_on_postgres(daemon, tmp_path, postgres_dsn):
    answer = _probe(daemon, tmp_path, CONVERSATION_STORAGE_BACKEND="postgres", DATABASE_URL=postgres_dsn)
    assert answer == {"kind": "redis", "backend": "postgres", "read": "test_value"}


def test_the_probe_runs_on_supabase(daemon, tmp_path, supabase_project):
    answer = _probe(daemon, tmp_path, CONVERSATION_STORAGE_BACKEND="supabase",
                    SUPABASE_URL=supabase_project.url, SUPABASE_KEY=supabase_project.secret_key)
    assert answer == {"kind": "redis", "backend": "supabase", "read": "test_value"}
