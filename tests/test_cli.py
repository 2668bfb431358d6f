"""The conversation-storage command and the cron cleanup script, run as a user runs them."""

from __future__ import annotations

import json
import subprocess
import sys
import time

import pytest

from tests.support.database import PROJECT_ROOT
from tests.support.environment import clean_environ
from tests.support.postgres_server import free_port
from utils.infrastructure.failover.spool import Spool

CLEANUP_SCRIPT = PROJECT_ROOT / "scripts" / "cleanup_expired_threads.py"


def run(args: list[str], env: dict[str, str], stdin: str | None = None) -> subprocess.CompletedProcess:
    command = args if args[0] == str(CLEANUP_SCRIPT) else ["-m", "utils.infrastructure.operations.cli", *args]
    return subprocess.run(
        [sys.executable, *command], check=False, cwd=PROJECT_ROOT, env=clean_environ(env),
        input=stdin, capture_output=True, text=True, timeout=120,
    )


@pytest.fixture
def sqlite_env(tmp_path):
    return {"CONVERSATION_STORAGE_BACKEND": "sqlite", "CONVERSATION_SQLITE_PATH": str(tmp_path / "t.sqlite3")}


@pytest.fixture
def supabase_env(supabase_project):
    return {
        "CONVERSATION_STORAGE_BACKEND": "supabase",
        "SUPABASE_URL": supabase_project.url,
        "SUPABASE_KEY": supabase_project.secret_key,
    }


def test_set_get_touch_list_stats_delete_round(sqlite_env):
    assert run(["set", "thread:cli", "60", '{"turns": [1]}', "--user-id", "alice"], sqlite_env).returncode == 0
    got = run(["get", "thread:cli"], sqlite_env)
    assert (got.returncode, json.loads(got.stdout)) == (0, {"turns": [1]})
    assert run(["set", "thread:stdin", "60"], sqlite_env, stdin='{"from": "stdin"}').returncode == 0
    assert json.loads(run(["get", "thread:stdin"], sqlite_env).stdout) == {"from": "stdin"}

    touched = run(["--json", "touch", "thread:cli", "3600"], sqlite_env)
    assert json.loads(touched.stdout) == {"key": "thread:cli", "touched": True, "ttl_seconds": 3600}

    listed = json.loads(run(["--json", "list", "--user-id", "alice"], sqlite_env).stdout)
    assert [t["key"] for t in listed] == ["thread:cli"]
    assert listed[0]["user_id"] == "alice"

    stats = json.loads(run(["--json", "stats"], sqlite_env).stdout)
    assert (stats["backend"], stats["live"], stats["expired"]) == ("sqlite", 2, 0)

    deleted = run(["--json", "delete", "thread:cli"], sqlite_env)
    assert (deleted.returncode, json.loads(deleted.stdout)["deleted"]) == (0, True)


def test_missing_threads_exit_3(sqlite_env):
    for args in (["get", "thread:none"], ["delete", "thread:none"], ["touch", "thread:none", "60"]):
        result = run(args, sqlite_env)
        assert result.returncode == 3, args
        assert "thread:none" in result.stdout + result.stderr


def test_bad_input_and_configuration_exit_2(sqlite_env, tmp_path):
    bad_value = run(["set", "thread:x", "60", "[1e400]"], sqlite_env)
    assert bad_value.returncode == 2
    assert "1e400, which cannot be stored" in bad_value.stderr
    assert run(["set", "thread:x", "0", "{}"], sqlite_env).returncode == 2
    memory = run(["get", "thread:x"], {"CONVERSATION_STORAGE_BACKEND": "memory"})
    assert memory.returncode == 2
    assert "nothing this command can reach" in memory.stderr
    assert run(["stats"], {"CONVERSATION_STORAGE_BACKEND": "redis"}).returncode == 2


def test_unreachable_store_exits_1_without_falling_back(tmp_path):
    env = {
        "CONVERSATION_STORAGE_BACKEND": "supabase",
        "SUPABASE_URL": f"http://127.0.0.1:{free_port()}",
        "SUPABASE_KEY": "key",
        "CONVERSATION_STORAGE_TIMEOUT_SECONDS": "2",
    }
    result = run(["--json", "stats"], env)
    assert result.returncode == 1
    assert "StorageUnavailableError" in json.loads(result.stdout.splitlines()[0])["error"]


def test_doctor_passes_against_a_healthy_supabase_project(supabase_env):
    result = run(["--json", "doctor"], supabase_env)
    report = json.loads(result.stdout)
    statuses = {c["check"]: c["status"] for c in report["checks"]}
    assert result.returncode == 0, result.stdout
    assert statuses == {
        "configuration": "PASS", "API key": "PASS", "reachability": "PASS", "key role": "PASS",
        "schema version": "PASS", "row level security": "PASS", "hourly cleanup": "PASS", "failover": "PASS",
    }


@pytest.mark.parametrize(("key_name", "kind"), [("publishable_key", "publishable key"), ("anon_key", "role 'anon'")])
def test_doctor_names_the_key_kind_and_the_fix(supabase_env, supabase_project, key_name, kind):
    result = run(["doctor"], {**supabase_env, "SUPABASE_KEY": getattr(supabase_project, key_name)})
    assert result.returncode == 4
    assert "FAIL  API key: SUPABASE_KEY is a" in result.stdout
    assert kind in result.stdout
    assert "fix: use the secret key (sb_secret_...)" in result.stdout
    assert "reachability" not in result.stdout, "nothing is asked of a store the key cannot use"


def test_doctor_warns_about_a_legacy_service_role_key(supabase_env, supabase_project):
    result = run(["--json", "doctor"], {**supabase_env, "SUPABASE_KEY": supabase_project.service_role_key})
    checks = {c["check"]: c for c in json.loads(result.stdout)["checks"]}
    assert result.returncode == 0
    assert checks["API key"]["status"] == "WARN"
    assert "retires legacy JWT API keys" in checks["API key"]["detail"]


def test_doctor_fails_on_memory_and_on_bad_configuration():
    assert "FAIL  persistence" in run(["doctor"], {}).stdout
    result = run(["doctor"], {"CONVERSATION_STORAGE_BACKEND": "redis"})
    assert result.returncode == 4
    assert "FAIL  configuration" in result.stdout


def test_migrate_dry_run_and_apply(postgres_server):
    from tests.support.postgres_server import PASSWORD

    name = postgres_server.create_database("cli_migrate")
    env = {"DATABASE_URL": postgres_server.dsn_for(name, password=PASSWORD)}
    dry = json.loads(run(["--json", "migrate", "--dry-run"], env).stdout)
    assert dry["dry_run"] is True and dry["files"][0] == "versioned/001_tables.sql"
    assert json.loads(run(["--json", "migrate"], env).stdout)["files"] == dry["files"]
    again = run(["migrate"], env)
    assert (again.returncode, again.stdout.strip()) == (0, "schema is up to date: nothing to apply")
    assert run(["migrate"], {}).returncode == 2


def test_migrate_stores_the_sizes_of_threads_written_before_schema_6(postgres_server):
    from tests.support.database import apply_sql, legacy_sql_files
    from tests.support.postgres_server import PASSWORD
    from utils.infrastructure.operations.migrations import sql_files

    name = postgres_server.create_database("cli_upgrade")
    env = {"DATABASE_URL": postgres_server.dsn_for(name, password=PASSWORD)}
    with postgres_server.connect(name) as conn:
        apply_sql(conn, legacy_sql_files("009"))  # the pre-release files before sizes were stored
        conn.execute("select public.thread_set('thread:' || i, '{\"turn\": 1}', 3600) from generate_series(1, 12) i")
    upgrade = json.loads(run(["--json", "migrate"], env).stdout)
    assert upgrade["files"] == [f.name for f in sql_files()]
    assert upgrade["sizes_filled"] == 12
    with postgres_server.connect(name) as conn:
        assert conn.execute("select count(*) from public.conversation_threads where size_bytes is null").fetchone()[0] == 0
    assert json.loads(run(["--json", "migrate"], env).stdout)["sizes_filled"] == 0


def test_cleanup_script_deletes_the_backlog_and_reports_json(supabase_env, supabase_project):
    with supabase_project.connect() as conn:
        conn.execute(
            "insert into public.conversation_threads (thread_id, conversation_data, expires_at)"
            " select 'thread:old' || i, '{}', now() - interval '1 hour' from generate_series(1, 2345) i"
        )
    result = run([str(CLEANUP_SCRIPT), "--json", "--batch-size", "500"], supabase_env)
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    assert (report["deleted"], report["batches"]) == (2345, 5)
    assert report["seconds"] >= 0
    plain = run([str(CLEANUP_SCRIPT)], supabase_env)
    assert plain.stdout.startswith("deleted 0 expired threads in ")


def test_cleanup_script_exit_codes(sqlite_env):
    assert run([str(CLEANUP_SCRIPT)], sqlite_env).returncode == 0
    assert run([str(CLEANUP_SCRIPT)], {"CONVERSATION_STORAGE_BACKEND": "memory"}).returncode == 2
    unreachable = {"CONVERSATION_STORAGE_BACKEND": "postgres",
                   "DATABASE_URL": f"postgresql://postgres:x@127.0.0.1:{free_port()}/postgres",
                   "CONVERSATION_STORAGE_TIMEOUT_SECONDS": "1"}
    assert run([str(CLEANUP_SCRIPT)], unreachable).returncode == 1


def test_doctor_reports_the_writes_still_spooled(supabase_env, tmp_path):
    path = tmp_path / "spool.sqlite3"
    spool = Spool(path)  # as a daemon leaves it that was stopped during an outage
    for n in range(2):
        spool.append_set(f"thread:{n}", 3600, "{}", None, None, time.time())
    spool.close()
    result = run(["--json", "doctor"], {**supabase_env, "CONVERSATION_SPOOL_PATH": str(path)})
    checks = {c["check"]: c for c in json.loads(result.stdout)["checks"]}
    assert checks["failover"]["status"] == "WARN", checks["failover"]
    assert f"spool {path} holds 2 writes not yet replayed" in checks["failover"]["detail"]
    assert "replayed by the next daemon" in checks["failover"]["fix"]
