"""How a daemon starts: a spool it cannot open, a spool left by a dead incarnation (PID 1 in a container)."""

from __future__ import annotations

import json
import logging
import shutil
import subprocess
import sys
import time

import pytest

from tests.support.database import PROJECT_ROOT
from tests.support.environment import clean_environ
from tests.support.outages import PostgresStore
from tests.support.postgres_server import PASSWORD
from utils.infrastructure.backends.memory_storage import InMemoryStorage
from utils.infrastructure.backends.postgres_storage import PostgresStorage
from utils.infrastructure.failover.spool import SpoolError
from utils.infrastructure.operations.backend_factory import create_storage
from utils.infrastructure.operations.settings import load_settings


def _settings(dsn: str, spool_path, **extra: str):
    return load_settings({"CONVERSATION_STORAGE_BACKEND": "postgres", "DATABASE_URL": dsn,
                          "CONVERSATION_SPOOL_PATH": str(spool_path), "CONVERSATION_STORAGE_TIMEOUT_SECONDS": "2",
                          **extra})


@pytest.fixture(params=["under a file", "read-only disk"])
def unopenable_spool(request, tmp_path):
    """A spool path where no file can be created: under a regular file, or on a read-only disk."""
    if request.param == "under a file":
        blocker = tmp_path / "not-a-directory"
        blocker.write_text("")
        yield blocker / "spool.sqlite3"
        return
    mount = tmp_path / "read-only"
    mount.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "ro,size=1m", "tmpfs", str(mount)], check=True)
    yield mount / "conversation-storage" / "spool.sqlite3"
    subprocess.run(["umount", "-l", str(mount)], check=False)


def test_no_spool_file_appears_until_a_write_is_spooled(stoppable_postgres, tmp_path, monkeypatch):
    # A fresh HOME and the default spool path, as for a daemon or a test run that never sets one.
    home = tmp_path / "home"
    home.mkdir()
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.delenv("XDG_DATA_HOME", raising=False)
    store = PostgresStore(stoppable_postgres)
    settings = load_settings({"CONVERSATION_STORAGE_BACKEND": "postgres",
                              "DATABASE_URL": stoppable_postgres.dsn_for("postgres", password=PASSWORD),
                              "CONVERSATION_STORAGE_TIMEOUT_SECONDS": "2"})
    spool = home / ".local" / "share" / "conversation-storage" / "spool-postgres.sqlite3"
    storage = create_storage(settings)
    try:
        assert storage.status()["failover"] == "on"
        storage.setex("thread:lazy", 3600, '{"turn": 1}')
        assert storage.get("thread:lazy") == '{"turn": 1}'
        assert storage.delete("thread:lazy") is True
        assert list(home.rglob("*")) == [], "the store is up: nothing to spool, no file"

        store.down()
        storage.setex("thread:lazy", 3600, '{"turn": 2}')
        assert storage.status()["state"] == "degraded"
        assert spool.is_file(), "the first spooled write creates the spool"
        assert storage.get("thread:lazy") == '{"turn": 2}'
        store.up()
        assert storage.wait_until_healthy(30)
    finally:
        store.up()
        storage.close()
    with store.client() as another_process:
        assert another_process.get("thread:lazy") == '{"turn": 2}'


def test_a_clean_shutdown_with_nothing_spooled_leaves_no_file(stoppable_postgres, tmp_path):
    path = tmp_path / "data" / "spool.sqlite3"
    dsn = stoppable_postgres.dsn_for("postgres", password=PASSWORD)
    with create_storage(_settings(dsn, path)) as storage:
        storage.setex("thread:kept", 3600, "{}")
    assert not (tmp_path / "data").exists()


def test_a_spool_that_cannot_be_opened_leaves_the_daemon_on_its_store_not_in_memory(
        stoppable_postgres, unopenable_spool, caplog):
    dsn = stoppable_postgres.dsn_for("postgres", password=PASSWORD)
    with caplog.at_level(logging.ERROR, logger="conversation_storage"):
        storage = create_storage(_settings(dsn, unopenable_spool))
    with storage:
        assert isinstance(storage, PostgresStorage)
        status = storage.status()
        storage.setex("thread:no-spool", 3600, '{"kept": "in postgres"}')
        assert storage.wait_until_healthy(5)  # a shutdown hook written for failover works on the bare store
    assert status["failover"] == "unavailable" and str(unopenable_spool) in status["last_error"]
    assert any(r.levelno == logging.ERROR and "failover is OFF" in r.getMessage() for r in caplog.records)
    with PostgresStorage(dsn) as another_process:
        assert another_process.get("thread:no-spool") == '{"kept": "in postgres"}'


def test_doctor_fails_on_a_spool_that_could_not_be_created(stoppable_postgres, unopenable_spool):
    env = clean_environ()
    env.update({"CONVERSATION_STORAGE_BACKEND": "postgres", "CONVERSATION_SPOOL_PATH": str(unopenable_spool),
                "DATABASE_URL": stoppable_postgres.dsn_for("postgres", password=PASSWORD)})
    result = subprocess.run([sys.executable, "-m", "utils.infrastructure.operations.cli", "--json", "doctor"], cwd=PROJECT_ROOT,
                            env=env, capture_output=True, text=True, timeout=120, check=False)
    checks = {c["check"]: c for c in json.loads(result.stdout)["checks"]}
    assert result.returncode == 4
    assert checks["failover"]["status"] == "FAIL"
    assert str(unopenable_spool) in checks["failover"]["detail"]


def test_in_strict_mode_a_spool_that_cannot_be_opened_raises(stoppable_postgres, unopenable_spool):
    dsn = stoppable_postgres.dsn_for("postgres", password=PASSWORD)
    with pytest.raises(SpoolError, match="cannot open the failover spool"):
        create_storage(_settings(dsn, unopenable_spool, CONVERSATION_STORAGE_STRICT="true"))


def test_with_neither_store_nor_spool_the_daemon_falls_back_to_memory_loudly(unopenable_spool, caplog):
    from tests.support.postgres_server import free_port

    dsn = f"postgresql://postgres:x@127.0.0.1:{free_port()}/postgres"
    with caplog.at_level(logging.WARNING, logger="conversation_storage"):
        storage = create_storage(_settings(dsn, unopenable_spool))
    assert isinstance(storage, InMemoryStorage)
    assert "will NOT survive a restart" in caplog.text


FIRST_INCARNATION = """
import os, sys, time
from utils.infrastructure.failover.spool import Spool
spool = Spool(sys.argv[1])
for i in range(20):
    spool.append_set(f"thread:pid1-{i}", 3600, '{"i": %d}' % i, None, None, time.time())
claimed = spool.claim(50)  # replaying, when it is killed
print(os.getpid(), len(claimed), flush=True)
time.sleep(600)
"""

SECOND_INCARNATION = """
import json, os, sys, time
from utils.infrastructure.failover.failover_storage import FailoverStorage
from utils.infrastructure.backends.postgres_storage import PostgresStorage
from utils.infrastructure.failover.spool import Spool
storage = FailoverStorage(PostgresStorage(sys.argv[2]), Spool(sys.argv[1]), first_probe_after=0.2)
first_reads = {key: storage.get(key) for key in ("thread:pid1-0", "thread:pid1-19", "thread:stored-before")}
healthy = storage.wait_until_healthy(20)
print(json.dumps({"pid": os.getpid(), "first_reads": first_reads, "healthy": healthy, **storage.status()}), flush=True)
storage.close()
"""


def _as_pid_1(script: str, *args: str, **popen) -> subprocess.Popen:
    """Run ``script`` as PID 1 of a new PID namespace, as a daemon in a container runs."""
    return subprocess.Popen([shutil.which("unshare") or "unshare", "--pid", "--fork", "--kill-child",
                             sys.executable, "-c", script, *args], cwd=PROJECT_ROOT, text=True, **popen)


def test_a_daemon_restarted_as_pid_1_takes_over_what_its_dead_predecessor_claimed(stoppable_postgres, tmp_path):
    store = PostgresStore(stoppable_postgres)
    dsn = stoppable_postgres.dsn_for("postgres", password=PASSWORD)
    spool = str(tmp_path / "spool.sqlite3")
    with store.client() as other_daemon:
        other_daemon.setex("thread:stored-before", 3600, '{"from": "the store"}')
    first = _as_pid_1(FIRST_INCARNATION, spool, stdout=subprocess.PIPE)
    try:
        assert first.stdout.readline().split() == ["1", "20"], "PID 1 claimed every spooled write"
    finally:
        first.kill()  # the container dies: its PID 1 with it
        first.wait()
    started = time.monotonic()
    second = _as_pid_1(SECOND_INCARNATION, spool, dsn, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    out, err = second.communicate(timeout=60)
    took = time.monotonic() - started
    report = json.loads(out.strip().splitlines()[-1]) if out.strip() else {}
    assert report.get("pid") == 1, err
    assert report["healthy"] and report["pending"] == 0, (report, took)
    assert report["first_reads"] == {"thread:pid1-0": '{"i": 0}', "thread:pid1-19": '{"i": 19}',
                                     "thread:stored-before": '{"from": "the store"}'}
    with store.client() as other_daemon:
        assert other_daemon.get("thread:pid1-7") == '{"i": 7}'
