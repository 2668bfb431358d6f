"""Choosing the backend from the environment, and falling back loudly."""

from __future__ import annotations

import inspect
import logging
import os
import re
import threading

import pytest

from tests.support.postgres_server import free_port
from utils.infrastructure import storage_backend
from utils.infrastructure.backends.memory_storage import InMemoryStorage
from utils.infrastructure.backends.supabase_storage import SupabaseStorage
from utils.infrastructure.contract.errors import (
    StorageConfigurationError,
    StoragePermissionError,
    StorageUnavailableError,
    StorageValueError,
)
from utils.infrastructure.operations import settings as settings_module
from utils.infrastructure.operations.settings import OWN_VARIABLES, load_settings
from utils.infrastructure.storage_backend import get_storage, get_storage_backend, reset_storage


def _use_supabase(env, url, key, **extra):
    env.setenv("CONVERSATION_STORAGE_BACKEND", "supabase")
    env.setenv("SUPABASE_URL", url)
    env.setenv("SUPABASE_KEY", key)
    for name, value in extra.items():
        env.setenv(name, value)


def test_memory_is_the_default_and_warns_that_threads_are_lost(clean_env, caplog):
    with caplog.at_level(logging.WARNING):
        storage = get_storage()
    assert isinstance(storage, InMemoryStorage)
    assert "lost when this process restarts" in caplog.text


def test_supabase_is_used_when_configured_and_reachable(clean_env, supabase_project, caplog):
    _use_supabase(clean_env, supabase_project.url, supabase_project.secret_key,
                  CONVERSATION_STORAGE_FAILOVER="false")
    with caplog.at_level(logging.INFO):
        storage = get_storage()
    assert isinstance(storage, SupabaseStorage)
    assert "persistently in supabase" in caplog.text
    storage.setex("thread:env", 60, '{"ok": 1}')
    assert storage.get("thread:env") == '{"ok": 1}'


# Both servers here are on loopback, where the cache is off unless asked for.
@pytest.mark.parametrize("setting, cached", [(None, False), ("true", True), ("false", False)])
def test_the_near_cache_is_on_when_asked_for_here(clean_env, supabase_project, postgres_dsn, setting, cached):
    if setting is not None:
        clean_env.setenv("CONVERSATION_NEAR_CACHE", setting)
    _use_supabase(clean_env, supabase_project.url, supabase_project.secret_key)
    assert (get_storage().primary.near_cache is not None) is cached
    reset_storage()
    clean_env.setenv("CONVERSATION_STORAGE_BACKEND", "postgres")
    clean_env.setenv("DATABASE_URL", postgres_dsn)
    assert (get_storage().primary.near_cache is not None) is cached


def test_the_log_says_why_a_local_server_has_no_near_cache(clean_env, postgres_dsn, caplog):
    clean_env.setenv("CONVERSATION_STORAGE_BACKEND", "postgres")
    clean_env.setenv("DATABASE_URL", postgres_dsn)
    with caplog.at_level(logging.INFO, logger="conversation_storage"):
        get_storage()
    assert "near cache off, as the server is on this machine" in caplog.text
    assert "CONVERSATION_NEAR_CACHE=true" in caplog.text
    reset_storage()
    caplog.clear()
    clean_env.setenv("CONVERSATION_NEAR_CACHE", "false")  # asked for: nothing to explain
    with caplog.at_level(logging.INFO, logger="conversation_storage"):
        get_storage()
    assert "persistently in postgres" in caplog.text and "near cache off" not in caplog.text


def test_service_role_key_variable_is_accepted(clean_env, supabase_project):
    _use_supabase(clean_env, supabase_project.url, supabase_project.service_role_key)
    clean_env.delenv("SUPABASE_KEY")
    clean_env.setenv("SUPABASE_SERVICE_ROLE_KEY", supabase_project.service_role_key)
    assert get_storage().health()["role"] == "service_role"


def test_unreachable_supabase_falls_back_to_memory_with_a_warning(clean_env, caplog):
    _use_supabase(clean_env, f"http://127.0.0.1:{free_port()}", "key", CONVERSATION_STORAGE_TIMEOUT_SECONDS="2",
                  CONVERSATION_STORAGE_FAILOVER="false")
    with caplog.at_level(logging.WARNING):
        storage = get_storage()
    assert isinstance(storage, InMemoryStorage)
    warning = caplog.text
    assert "cannot reach Supabase" in warning
    assert "will NOT survive a restart" in warning


def test_strict_mode_raises_instead_of_falling_back(clean_env):
    _use_supabase(clean_env, f"http://127.0.0.1:{free_port()}", "key", CONVERSATION_STORAGE_STRICT="true")
    with pytest.raises(StorageUnavailableError):
        get_storage()


def test_a_publishable_key_falls_back_naming_the_key_and_the_fix(clean_env, supabase_project, caplog):
    _use_supabase(clean_env, supabase_project.url, supabase_project.publishable_key)
    with caplog.at_level(logging.WARNING):
        assert isinstance(get_storage(), InMemoryStorage)
    assert "publishable key (sb_publishable_...)" in caplog.text
    assert "secret key (sb_secret_" in caplog.text
    reset_storage()
    clean_env.setenv("CONVERSATION_STORAGE_STRICT", "1")
    with pytest.raises(StoragePermissionError):
        get_storage()


def test_missing_credentials_fall_back_naming_them(clean_env, caplog):
    clean_env.setenv("CONVERSATION_STORAGE_BACKEND", "supabase")
    with caplog.at_level(logging.WARNING):
        assert isinstance(get_storage(), InMemoryStorage)
    assert "SUPABASE_URL and SUPABASE_KEY" in caplog.text


def test_singleton_is_shared_across_threads(clean_env):
    seen: list[object] = []
    barrier = threading.Barrier(8)

    def grab() -> None:
        barrier.wait()
        seen.append(get_storage())

    threads = [threading.Thread(target=grab) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len({id(s) for s in seen}) == 1
    assert get_storage_backend() is seen[0]


def test_reset_closes_and_rereads_the_environment(clean_env, supabase_project):
    first = get_storage()
    assert isinstance(first, InMemoryStorage)
    _use_supabase(clean_env, supabase_project.url, supabase_project.secret_key)
    assert get_storage() is first, "the environment is read once"
    reset_storage()
    assert first.closed
    assert get_storage().backend_name == "supabase"


def test_a_closed_singleton_is_replaced(clean_env):
    first = get_storage()
    first.shutdown()
    assert get_storage() is not first


def test_dotenv_fills_in_without_overriding_the_environment(clean_env, tmp_path):
    (tmp_path / ".env").write_text(
        "CONVERSATION_STORAGE_BACKEND=supabase\nSUPABASE_URL=http://from-dotenv\nCONVERSATION_TIMEOUT_HOURS=5\n"
    )
    clean_env.setenv("SUPABASE_URL", "http://from-environment")
    settings = load_settings()
    assert settings.backend == "supabase"
    assert settings.supabase_url == "http://from-environment"
    assert settings.timeout_hours == 5
    assert settings.ttl_seconds == 5 * 3600


def test_every_variable_the_settings_read_can_come_from_dotenv(clean_env, tmp_path):
    # OWN_VARIABLES is also the list tests strip from the environment: a name
    # missing there is ignored in .env and leaks from a developer's shell into tests.
    read = set(re.findall(r'"((?:CONVERSATION|SUPABASE|DATABASE)_[A-Z_]+)"', inspect.getsource(settings_module)))
    assert read <= set(OWN_VARIABLES), read - set(OWN_VARIABLES)
    (tmp_path / ".env").write_text("CONVERSATION_NEAR_CACHE=false\n")
    assert load_settings().near_cache is False


def test_dotenv_is_read_not_exported_and_only_our_variables_count(clean_env, tmp_path):
    (tmp_path / ".env").write_text(
        "CONVERSATION_STORAGE_BACKEND=sqlite\nOPENAI_API_KEY=sk-project-secret\nPATH=/nowhere\n"
    )
    before = dict(os.environ)
    assert load_settings().backend == "sqlite"
    assert get_storage().backend_name == "sqlite"
    assert dict(os.environ) == before, "nothing from .env may reach the process environment"


@pytest.mark.parametrize("value", ["0", "-1", "three", "nan", "inf"])
def test_a_bad_conversation_timeout_warns_and_keeps_the_default_as_pal_does(clean_env, caplog, value):
    clean_env.setenv("CONVERSATION_TIMEOUT_HOURS", value)
    with caplog.at_level(logging.WARNING):
        settings = load_settings()
    assert settings.ttl_seconds == 3 * 3600
    assert f"CONVERSATION_TIMEOUT_HOURS={value!r}" in caplog.text
    assert get_storage() is not None


@pytest.mark.parametrize(
    ("name", "value", "message"),
    [
        ("CONVERSATION_MAX_VALUE_BYTES", "8MB", "not a valid whole number"),
        ("CONVERSATION_MAX_VALUE_BYTES", "0", "must be a positive"),
        ("CONVERSATION_STORAGE_STRICT", "maybe", "true or false"),
        ("CONVERSATION_STORAGE_TIMEOUT_SECONDS", "inf", "must be a positive"),
    ],
)
def test_bad_environment_values_raise_a_clear_error(clean_env, name, value, message):
    clean_env.setenv(name, value)
    with pytest.raises(StorageConfigurationError, match=message) as info:
        get_storage()
    assert name in str(info.value)


@pytest.mark.parametrize("value", ["redis", "dual"])
def test_an_unknown_backend_never_crashes_the_daemon_but_is_named(clean_env, caplog, value):
    clean_env.setenv("CONVERSATION_STORAGE_BACKEND", value)
    with caplog.at_level(logging.WARNING):
        settings = load_settings()
    assert settings.backend == ("supabase" if value == "dual" else "memory")
    assert f"CONVERSATION_STORAGE_BACKEND={value}" in caplog.text.replace("'", "")
    assert "memory, supabase, postgres, sqlite" in caplog.text


def test_dual_runs_on_supabase_as_ex_ai_means_it(clean_env, supabase_project, caplog):
    _use_supabase(clean_env, supabase_project.url, supabase_project.secret_key, CONVERSATION_STORAGE_BACKEND="dual")
    with caplog.at_level(logging.WARNING):
        storage = get_storage()
    assert storage.backend_name == "supabase"
    assert "read as supabase" in caplog.text


@pytest.mark.parametrize("value", ["redis", "dual"])
def test_in_strict_mode_an_unknown_backend_raises(clean_env, value):
    clean_env.setenv("CONVERSATION_STORAGE_BACKEND", value)
    clean_env.setenv("CONVERSATION_STORAGE_STRICT", "true")
    with pytest.raises(StorageConfigurationError, match="not a known backend.*memory, supabase, postgres, sqlite"):
        get_storage()


@pytest.mark.parametrize("public_key", ["anon_key", "publishable_key"])
def test_a_service_key_under_its_own_name_wins_over_a_public_supabase_key(clean_env, supabase_project, public_key):
    # EX-AI's template: the browser's key in SUPABASE_KEY, the server's in SUPABASE_SERVICE_ROLE_KEY.
    _use_supabase(clean_env, supabase_project.url, getattr(supabase_project, public_key),
                  SUPABASE_SERVICE_ROLE_KEY=supabase_project.secret_key)
    storage = get_storage()
    assert not isinstance(storage, InMemoryStorage)
    assert storage.health()["role"] == "service_role"


def test_max_value_bytes_comes_from_the_environment(clean_env):
    clean_env.setenv("CONVERSATION_MAX_VALUE_BYTES", "100")
    storage = get_storage()
    with pytest.raises(StorageValueError, match="CONVERSATION_MAX_VALUE_BYTES"):
        storage.setex("thread:big", 60, '"' + "x" * 100 + '"')


def test_module_exports_the_public_names():
    for name in storage_backend.__all__:
        assert getattr(storage_backend, name) is not None


def test_postgres_is_used_with_database_url(clean_env, postgres_dsn, caplog):
    clean_env.setenv("CONVERSATION_STORAGE_BACKEND", "postgres")
    clean_env.setenv("SUPABASE_DB_URL", postgres_dsn)  # accepted for DATABASE_URL
    clean_env.setenv("CONVERSATION_STORAGE_FAILOVER", "false")
    with caplog.at_level(logging.INFO):
        storage = get_storage()
    from utils.infrastructure.backends.postgres_storage import PostgresStorage

    assert isinstance(storage, PostgresStorage)
    assert "persistently in postgres" in caplog.text


def test_pooler_mode_can_be_forced_from_the_environment(clean_env, postgres_dsn):
    clean_env.setenv("CONVERSATION_STORAGE_BACKEND", "postgres")
    clean_env.setenv("DATABASE_URL", postgres_dsn)
    clean_env.setenv("CONVERSATION_POSTGRES_TRANSACTION_POOLER", "true")
    assert get_storage().primary.transaction_pooler is True


def test_sqlite_is_used_at_the_configured_path(clean_env, tmp_path):
    clean_env.setenv("CONVERSATION_STORAGE_BACKEND", "sqlite")
    clean_env.setenv("CONVERSATION_SQLITE_PATH", str(tmp_path / "deep" / "threads.db"))
    storage = get_storage()
    storage.setex("thread:file", 60, "{}")
    assert (tmp_path / "deep" / "threads.db").exists()


def test_a_home_relative_path_from_a_dotenv_file_is_under_home(clean_env, tmp_path):
    # .env.example writes its paths with ~, and nothing expands it in a .env file.
    clean_env.setenv("HOME", str(tmp_path / "home"))
    (tmp_path / ".env").write_text("CONVERSATION_STORAGE_BACKEND=sqlite\n"
                                   "CONVERSATION_SQLITE_PATH=~/threads.sqlite3\n"
                                   "CONVERSATION_SPOOL_PATH=~/spool.sqlite3\n")
    clean_env.delenv("CONVERSATION_SPOOL_PATH")
    settings = load_settings()
    assert settings.sqlite_path == str(tmp_path / "home" / "threads.sqlite3")
    assert settings.spool_path == str(tmp_path / "home" / "spool.sqlite3")
    get_storage().setex("thread:home", 60, "{}")
    assert (tmp_path / "home" / "threads.sqlite3").exists() and not (tmp_path / "~").exists()


def test_unreachable_postgres_falls_back(clean_env, caplog):
    clean_env.setenv("CONVERSATION_STORAGE_BACKEND", "postgres")
    clean_env.setenv("DATABASE_URL", f"postgresql://postgres:x@127.0.0.1:{free_port()}/postgres")
    clean_env.setenv("CONVERSATION_STORAGE_TIMEOUT_SECONDS", "1")
    clean_env.setenv("CONVERSATION_STORAGE_FAILOVER", "off")
    with caplog.at_level(logging.WARNING):
        assert isinstance(get_storage(), InMemoryStorage)
    assert "'postgres' is unavailable" in caplog.text


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("CONVERSATION_POSTGRES_TRANSACTION_POOLER", "sometimes"),
        ("CONVERSATION_POSTGRES_POOL_MAX", "ten"),
        ("CONVERSATION_SQLITE_SYNCHRONOUS", "off"),
    ],
)
def test_bad_backend_options_raise(clean_env, name, value):
    clean_env.setenv(name, value)
    with pytest.raises(StorageConfigurationError, match=name):
        get_storage()


def test_a_postgres_database_without_the_schema_falls_back_naming_migrate(clean_env, postgres_server, caplog):
    from tests.support.postgres_server import PASSWORD

    name = postgres_server.create_database("fallback_without_schema")
    clean_env.setenv("CONVERSATION_STORAGE_BACKEND", "postgres")
    clean_env.setenv("DATABASE_URL", postgres_server.dsn_for(name, password=PASSWORD))
    with caplog.at_level(logging.WARNING):
        assert isinstance(get_storage(), InMemoryStorage)
    [warning] = [r.getMessage() for r in caplog.records if "falling back to in-memory" in r.getMessage()]
    assert "Create the schema (version " in warning
    assert "run `conversation-storage migrate` with DATABASE_URL set to the database's connection string" in warning
    assert "psql" not in warning


def test_the_schema_advice_for_supabase_leads_with_migrate_and_keeps_the_sql_editor():
    from utils.infrastructure.backends.sql_errors import error_for_code

    message = str(error_for_code("PGRST202", "Could not find the function public.storage_health",
                                 operation="storage_health", where="Supabase"))
    assert message.index("`conversation-storage migrate`") < message.index("SQL editor")
    assert "paste the output of `conversation-storage sql` into the SQL editor" in message
    assert "NOTIFY pgrst, 'reload schema'" in message


def test_every_variable_the_settings_read_is_in_the_readmes_configuration_table():
    import re

    from tests.support.database import PROJECT_ROOT

    source = (PROJECT_ROOT / "utils" / "infrastructure" / "operations" / "settings.py").read_text()
    read = set(re.findall(r'"((?:CONVERSATION|SUPABASE)_[A-Z_]+|DATABASE_URL)"', source))
    readme = (PROJECT_ROOT / "README.md").read_text()
    section = readme.split("\n## Configuration\n", 1)[1].split("\n## ", 1)[0]
    table = "\n".join(line for line in section.splitlines() if line.startswith("| `"))
    assert "CONVERSATION_SPOOL_PATH" in read
    assert sorted(name for name in read if f"`{name}`" not in table) == []
