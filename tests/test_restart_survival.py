"""scripts/restart_survival.py: a writer killed with SIGKILL loses nothing it acknowledged."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from tests.support.database import PROJECT_ROOT
from tests.support.environment import clean_environ

SCRIPT = PROJECT_ROOT / "scripts" / "restart_survival.py"


def _survive(env: dict[str, str]) -> tuple[int, dict]:
    result = subprocess.run(
        [sys.executable, str(SCRIPT), "--json", "--threads", "4", "--kill-after", "1.0"],
        cwd=PROJECT_ROOT, env=clean_environ(env), capture_output=True, text=True, timeout=180, check=False,
    )
    assert result.stdout, result.stderr
    return result.returncode, json.loads(result.stdout)


@pytest.mark.parametrize("backend", ["sqlite", "postgres", "supabase"])
def test_nothing_acknowledged_is_lost(backend, request, tmp_path):
    if backend == "sqlite":
        env = {"CONVERSATION_SQLITE_PATH": str(tmp_path / "t.sqlite3")}
    elif backend == "postgres":
        env = {"DATABASE_URL": request.getfixturevalue("postgres_dsn")}
    else:
        project = request.getfixturevalue("supabase_project")
        env = {"SUPABASE_URL": project.url, "SUPABASE_KEY": project.secret_key}
    code, summary = _survive({"CONVERSATION_STORAGE_BACKEND": backend, **env})
    assert summary["writer_killed_with_sigkill"] is True
    assert summary["backend"] == backend
    assert summary["acknowledged_writes"] >= 4, "the writer was killed mid-stream, after writing"
    assert (summary["lost"], summary["corrupt"]) == ([], [])
    assert summary["continued"] == summary["threads"] == 4
    assert code == 0


def test_memory_loses_everything_as_explained():
    code, summary = _survive({"CONVERSATION_STORAGE_BACKEND": "memory"})
    assert summary["backend"] == "memory"
    assert len(summary["lost"]) == summary["threads"] == 4
    assert code == 0
