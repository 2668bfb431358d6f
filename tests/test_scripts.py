"""The scripts run as a user runs them: separate processes, real exit codes."""

from __future__ import annotations

import subprocess
import sys

from tests.support.database import PROJECT_ROOT
from tests.support.environment import clean_environ
from tests.support.postgres_server import free_port

SMOKE_TEST = PROJECT_ROOT / "scripts" / "testing" / "test_supabase_storage.py"


def _run(script, env_overrides: dict[str, str]) -> subprocess.CompletedProcess:
    env = clean_environ(env_overrides)
    return subprocess.run(
        [sys.executable, str(script)], cwd=PROJECT_ROOT, env=env, capture_output=True, text=True, timeout=120,
        check=False,
    )


def test_smoke_test_passes_against_supabase(supabase_project):
    result = _run(SMOKE_TEST, {
        "CONVERSATION_STORAGE_BACKEND": "supabase",
        "SUPABASE_URL": supabase_project.url,
        "SUPABASE_KEY": supabase_project.secret_key,
    })
    assert result.returncode == 0, result.stdout + result.stderr
    assert "FAIL" not in result.stdout
    assert result.stdout.count("PASS") == 7


def test_smoke_test_fails_when_supabase_is_unreachable():
    result = _run(SMOKE_TEST, {
        "CONVERSATION_STORAGE_BACKEND": "supabase",
        "SUPABASE_URL": f"http://127.0.0.1:{free_port()}",
        "SUPABASE_KEY": "key",
    })
    assert result.returncode == 1
    assert "FAIL  backend is supabase" in result.stdout


def test_demo_shows_a_thread_outliving_its_process_without_any_server():
    result = _run(PROJECT_ROOT / "scripts" / "demo.py", {})
    assert result.returncode == 0, result.stderr
    assert "written by another process; added turn 2" in result.stdout
    assert "read 2 turns: Review my diff / Two threads append without a lock." in result.stdout
    assert "deleted: True; read back: None" in result.stdout
    pids = {line.split("]")[0] for line in result.stdout.splitlines() if line.startswith("[process")}
    assert len(pids) == 3, "each step runs in a process of its own"


def test_demo_on_memory_shows_the_thread_lost():
    result = _run(PROJECT_ROOT / "scripts" / "demo.py", {"CONVERSATION_STORAGE_BACKEND": "memory"})
    assert result.returncode == 1
    assert "does not survive a restart" in result.stdout
