"""The spool file under stress: a full disk, several daemons sharing it, a file from an older version."""

from __future__ import annotations

import json
import shutil
import sqlite3
import subprocess
import sys
import time
from datetime import UTC, datetime

import pytest
from freezegun import freeze_time

from tests.support.database import PROJECT_ROOT
from tests.support.outages import PostgresStore
from tests.support.postgres_server import PASSWORD
from tests.support.rows import thread_rows
from tests.support.waiting import wait_until
from utils.infrastructure.contract.errors import StorageUnavailableError
from utils.infrastructure.failover.failover_storage import HEALTHY, FailoverStorage
from utils.infrastructure.failover.spool import Spool, SpoolError


@pytest.fixture
def small_disk(tmp_path):
    """A 1 MiB tmpfs: a disk that really fills up."""
    mount = tmp_path / "disk"
    mount.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(mount)], check=True)
    yield mount
    subprocess.run(["umount", "-l", str(mount)], check=False)


def test_a_full_spool_disk_refuses_new_writes_and_still_replays_the_acknowledged_ones(store, small_disk, caplog):
    spool = Spool(small_disk / "spool.sqlite3")
    filler = small_disk / "filler"
    storage = FailoverStorage(store.client(), spool, first_probe_after=0.2, max_probe_interval=1.0)
    acked: dict[str, dict] = {}
    try:
        store.down()
        filler.write_bytes(b"\0" * (shutil.disk_usage(small_disk).free - 400_000))
        with pytest.raises(StorageUnavailableError, match="NOT saved") as refused:
            for i in range(1000):
                key, value = f"thread:full{i}", {"i": i, "pad": "x" * 2000}
                storage.setex(key, 3600, json.dumps(value))
                acked[key] = value
        assert isinstance(refused.value, SpoolError) and not isinstance(refused.value, sqlite3.Error)
        assert "could not be saved anywhere" in caplog.text
        assert len(acked) >= 5

        store.up()
        wait_until(lambda: thread_rows(store, acked) == acked,
                   "acknowledged writes to reach the store although the spool is full", interval=0.2)
        storage.setex("thread:full-after", 3600, '{"direct": true}')  # the store is back: no spool needed

        filler.unlink()  # room again: the spool empties and the circuit closes
        assert storage.wait_until_healthy(30), (storage.status(), shutil.disk_usage(small_disk), list(small_disk.iterdir()))
        assert storage.status()["pending"] == 0
    finally:
        store.up()
        storage.close()
    assert thread_rows(store, ["thread:full-after"]) == {"thread:full-after": {"direct": True}}


def test_a_spool_recovers_when_only_a_little_room_comes_back(store, small_disk):
    spool = Spool(small_disk / "spool.sqlite3")
    filler, a_little = small_disk / "filler", small_disk / "a-little"
    storage = FailoverStorage(store.client(), spool, first_probe_after=0.2, max_probe_interval=0.5)
    acked: dict[str, dict] = {}
    try:
        store.down()
        a_little.write_bytes(b"\0" * 64 * 1024)
        filler.write_bytes(b"\0" * (shutil.disk_usage(small_disk).free - 400_000))
        with pytest.raises(SpoolError):
            for i in range(1000):
                key, value = f"thread:little{i}", {"i": i, "pad": "x" * 3000}
                storage.setex(key, 3600, json.dumps(value))
                acked[key] = value
        assert len(acked) >= 50, "enough spooled writes to fill a claim"
        store.up()
        a_little.unlink()  # 64 KiB: far less than the spooled writes take
        assert storage.wait_until_healthy(30), (storage.status(), shutil.disk_usage(small_disk))
        assert storage.status()["pending"] == 0
    finally:
        store.up()
        storage.close()
    assert thread_rows(store, acked) == acked


DAEMON = """
import json, sys
from utils.infrastructure.failover.failover_storage import FailoverStorage
from utils.infrastructure.backends.postgres_storage import PostgresStorage
from utils.infrastructure.failover.spool import Spool
from utils.infrastructure.backends.supabase_storage import SupabaseStorage

name, kind, spool_path, *where = sys.argv[1:]
client = (PostgresStorage(where[0], connect_timeout=1, statement_timeout=2) if kind == "postgres"
          else SupabaseStorage(where[0], where[1], timeout_seconds=0.5))
storage = FailoverStorage(client, Spool(spool_path), first_probe_after=0.2, max_probe_interval=0.5)
print("ready", flush=True)
sys.stdin.readline()
for i in range(300):
    storage.setex(f"thread:{name}-{i}", 3600, json.dumps({"by": name, "i": i}))
print("spooled", storage.status()["state"], flush=True)
sys.stdin.readline()
healthy = storage.wait_until_healthy(120)
print(json.dumps({"healthy": healthy, **storage.status()}), flush=True)
storage.close()
"""


def test_daemons_sharing_a_spool_replay_each_write_once(store, tmp_path):
    if isinstance(store, PostgresStore):
        where = [store.server.dsn_for("postgres", password=PASSWORD)]
    else:
        where = [store.project.url, store.project.secret_key]
    spool = str(tmp_path / "shared-spool.sqlite3")
    daemons = [
        subprocess.Popen([sys.executable, "-c", DAEMON, name, store.name, spool, *where], cwd=PROJECT_ROOT,
                         stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
        for name in ("a", "b")
    ]
    try:
        assert [d.stdout.readline().strip() for d in daemons] == ["ready", "ready"]
        store.down()
        for daemon in daemons:
            daemon.stdin.write("spool\n")
            daemon.stdin.flush()
        assert [d.stdout.readline().split() for d in daemons] == [["spooled", "degraded"]] * 2
        if not isinstance(store, PostgresStore):
            store.project.gateway.reset_counts()
        store.up()
        for daemon in daemons:
            daemon.stdin.write("go\n")
            daemon.stdin.flush()
        reports = [json.loads(d.stdout.readline()) for d in daemons]
    finally:
        store.up()
        for daemon in daemons:
            daemon.kill()
            daemon.wait()
    assert [r["healthy"] for r in reports] == [True, True], reports
    replay_calls = sum(sum(r["replayed"].values()) for r in reports)
    assert replay_calls == 600, [r["replayed"] for r in reports]
    if not isinstance(store, PostgresStore):
        assert store.project.gateway.counts["thread_replay"] == 600
    expected = {f"thread:{name}-{i}": {"by": name, "i": i} for name in ("a", "b") for i in range(300)}
    assert thread_rows(store, expected) == expected


OLD_SPOOL_SCHEMA = """
create table spooled_writes (
    id integer primary key autoincrement, key text not null,
    op text not null check (op in ('set', 'delete')), value text, ttl integer, user_id text,
    metadata text, written_at real not null
);
create index spooled_writes_key_idx on spooled_writes (key, id);
"""


def test_a_spool_file_from_the_previous_version_is_upgraded_and_replayed(store, tmp_path):
    path = tmp_path / "old-spool.sqlite3"
    with sqlite3.connect(path) as conn:
        conn.executescript(OLD_SPOOL_SCHEMA)
        conn.execute("insert into spooled_writes (key, op, value, ttl, written_at) values (?, 'set', ?, 3600, ?)",
                     ("thread:from-old-spool", '{"old": true}', time.time() - 5))
    with FailoverStorage(store.client(), Spool(path), first_probe_after=0.1) as storage:
        assert storage.wait_until_healthy(30)
        assert storage.status()["state"] == HEALTHY
    assert thread_rows(store, ["thread:from-old-spool"]) == {"thread:from-old-spool": {"old": True}}


def test_a_spooled_write_carries_over_the_user_and_metadata_of_the_live_write_it_follows(tmp_path):
    spool = Spool(tmp_path / "spool.sqlite3")
    now = time.time()
    # A spool stamps one process's writes in increasing order: written here in time order.
    spool.append_set("thread:short", 1, '{"turn": 1}', "user-2", None, now - 10)  # expired before the next
    spool.append_set("thread:short", 3600, '{"turn": 2}', None, None, now)
    spool.append_set("thread:k", 3600, '{"turn": 1}', "user-1", {"tool": "chat"}, now + 1)
    spool.append_set("thread:k", 3600, '{"turn": 2}', None, None, now + 2)
    spool.append_delete("thread:gone", now + 3)
    spool.append_set("thread:gone", 3600, '{"turn": 2}', None, None, now + 4)
    latest = {key: spool.latest(key) for key in ("thread:k", "thread:short", "thread:gone")}
    spool.close()
    assert (latest["thread:k"].user_id, latest["thread:k"].metadata) == ("user-1", {"tool": "chat"})
    assert latest["thread:short"].user_id is None, "an expired thread keeps no owner"
    assert latest["thread:gone"].user_id is None, "nor does a deleted one"


def test_once_a_daemon_replays_a_write_no_daemon_on_the_spool_reads_an_older_one(tmp_path):
    path = tmp_path / "shared.sqlite3"
    daemon_a, daemon_b = Spool(path), Spool(path)
    now = time.time()
    daemon_a.append_set("thread:k", 3600, '{"v": "older, by A"}', None, None, now)
    daemon_b.append_set("thread:k", 3600, '{"v": "newer, by B"}', None, None, now + 1)
    claimed_by_a = daemon_a.claim(1)
    assert [w.value for w in claimed_by_a] == ['{"v": "older, by A"}'], "A replays the older one, slowly"
    newer = daemon_b.latest("thread:k")
    daemon_b.remove(newer)  # B replayed the newer write first
    assert daemon_a.latest("thread:k") is None, "A's degraded read no longer answers the older value"
    assert not daemon_a.holds(claimed_by_a[0].id), "and A does not replay it"
    daemon_a.close()
    daemon_b.close()


def test_a_claim_of_a_live_but_stalled_owner_lapses_after_its_lease(tmp_path):
    lease = 120  # the README's promise, so a changed lease fails here
    path = tmp_path / "shared.sqlite3"
    stalled, other = Spool(path), Spool(path)
    now = time.time()
    stalled.append_set("thread:k", 3600, '{"v": 1}', None, None, now)
    [claimed] = stalled.claim(10)  # and then hangs on a dead store, its flock still held
    try:
        with freeze_time(datetime.fromtimestamp(now + lease - 5, UTC)):
            assert other.claim(10) == [], "the owner is alive and its lease runs"
        with freeze_time(datetime.fromtimestamp(now + lease + 5, UTC)):
            assert [w.id for w in other.claim(10)] == [claimed.id], "the lease lapsed: another daemon replays"
        assert not stalled.holds(claimed.id)
        assert other.holds(claimed.id)
    finally:
        stalled.close()
        other.close()


def test_a_claim_of_an_owner_that_died_lapses_at_once(tmp_path):
    path = tmp_path / "shared.sqlite3"
    writer = Spool(path)
    writer.append_set("thread:k", 3600, '{"v": 1}', None, None, time.time())
    writer.close()
    # The owner's flock goes with its process; os._exit skips any tidying up.
    owner = (f"import os\nfrom utils.infrastructure.failover.spool import Spool\n"
             f"assert len(Spool({str(path)!r}).claim(10)) == 1\nos._exit(0)")
    subprocess.run([sys.executable, "-c", owner], cwd=PROJECT_ROOT, check=True)
    other = Spool(path)
    try:
        assert [w.value for w in other.claim(10)] == ['{"v": 1}']
    finally:
        other.close()
