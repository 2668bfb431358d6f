"""What is specific to the SQLite backend: one file shared by threads and processes."""

from __future__ import annotations

import json
import sqlite3
import subprocess
import sys
import time

import pytest

from tests.support.database import PROJECT_ROOT
from tests.support.waiting import wait_until
from utils.infrastructure.backends.sqlite_storage import SQLiteStorage, default_path
from utils.infrastructure.contract.errors import StorageConfigurationError, StorageUnavailableError

WORKER = """
import json, sys
from utils.infrastructure.backends.sqlite_storage import SQLiteStorage
path, name, count = sys.argv[1], sys.argv[2], int(sys.argv[3])
storage = SQLiteStorage(path)
for i in range(count):
    key = f"thread:{name}:{i % 20}"
    storage.setex(key, 3600, json.dumps({"writer": name, "i": i, "pad": "x" * 2000}))
    text = storage.get(key)
    doc = json.loads(text)  # a torn or corrupt read fails here
    assert doc["writer"] == name, doc
    other = storage.get(f"thread:{'b' if name == 'a' else 'a'}:{i % 20}")
    if other is not None:
        assert json.loads(other)["writer"] != name
storage.close()
print("ok")
"""


def _rows(path):
    with sqlite3.connect(path) as conn:
        return conn.execute("select thread_id, conversation_data, accessed_at from conversation_threads").fetchall()


def _has_lapsed(path, key) -> bool:
    """Whether ``key``'s row is past its expires_at on the clock the store reads (SQLite's julianday('now'))."""
    with sqlite3.connect(path) as conn:
        row = conn.execute("select expires_at <= (julianday('now') - 2440587.5) * 86400.0"
                           " from conversation_threads where thread_id = ?", (key,)).fetchone()
    return row is not None and bool(row[0])


def test_two_processes_write_and_read_one_file_at_once(tmp_path):
    path = tmp_path / "shared.sqlite3"
    SQLiteStorage(path).close()
    workers = [
        subprocess.Popen(
            [sys.executable, "-c", WORKER, str(path), name, "400"],
            cwd=PROJECT_ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        )
        for name in ("a", "b")
    ]
    outputs = [w.communicate(timeout=120) for w in workers]
    assert [w.returncode for w in workers] == [0, 0], outputs
    with SQLiteStorage(path) as storage:
        for name in ("a", "b"):
            for slot in range(20):
                last = max(i for i in range(400) if i % 20 == slot)
                assert json.loads(storage.get(f"thread:{name}:{slot}"))["i"] == last
    with sqlite3.connect(path) as conn:
        assert conn.execute("pragma integrity_check").fetchone()[0] == "ok"


def test_threads_survive_closing_and_reopening(tmp_path):
    path = tmp_path / "t.sqlite3"
    with SQLiteStorage(path) as storage:
        storage.setex("thread:kept", 3600, '{"turns": 3}')
    with SQLiteStorage(path) as storage:
        assert storage.get("thread:kept") == '{"turns": 3}'


def test_file_is_in_wal_mode(tmp_path):
    with SQLiteStorage(tmp_path / "t.sqlite3") as storage:
        assert storage.health()["journal_mode"] == "wal"


def test_reads_do_not_rewrite_recently_accessed_rows(tmp_path):
    path = tmp_path / "t.sqlite3"
    with SQLiteStorage(path) as storage:
        storage.setex("thread:hot", 60, "{}")
        before = _rows(path)
        for _ in range(5):
            storage.get("thread:hot")
        assert _rows(path) == before
        with sqlite3.connect(path) as conn:
            conn.execute("update conversation_threads set accessed_at = accessed_at - 120")
        storage.get("thread:hot")
        assert abs(_rows(path)[0][2] - time.time()) < 5


def test_expired_rows_stay_until_cleanup(tmp_path):
    path = tmp_path / "t.sqlite3"
    with SQLiteStorage(path) as storage:
        storage.setex("thread:stale", 1, "{}")
        wait_until(lambda: _has_lapsed(path, "thread:stale"), "the thread to expire on the store's clock")
        assert storage.get("thread:stale") is None
        assert len(_rows(path)) == 1
        assert storage.cleanup_expired() == 1
        assert _rows(path) == []


def test_a_locked_file_raises_unavailable_after_the_busy_timeout(tmp_path):
    path = tmp_path / "t.sqlite3"
    with SQLiteStorage(path, busy_timeout=0.2) as storage:
        blocker = sqlite3.connect(path, isolation_level=None)
        blocker.execute("begin exclusive")
        try:
            with pytest.raises(StorageUnavailableError, match="locked"):
                storage.setex("thread:x", 60, "{}")
        finally:
            blocker.execute("rollback")
            blocker.close()
        storage.setex("thread:x", 60, "{}")


def test_unwritable_location_raises_unavailable(tmp_path):
    blocker = tmp_path / "a-file"
    blocker.write_text("not a directory")
    with pytest.raises(StorageUnavailableError):
        SQLiteStorage(blocker / "threads.sqlite3")


def test_unknown_synchronous_mode_is_a_configuration_error(tmp_path):
    with pytest.raises(StorageConfigurationError):
        SQLiteStorage(tmp_path / "t.sqlite3", synchronous="sometimes")


def test_default_path_follows_xdg_data_home(monkeypatch, tmp_path):
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path))
    assert default_path() == tmp_path / "conversation-storage" / "threads.sqlite3"
