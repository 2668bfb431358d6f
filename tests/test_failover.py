"""Runtime failover: the store goes away mid-run, the daemon keeps going and loses nothing."""

from __future__ import annotations

import itertools
import json
import os
import signal
import subprocess
import sys
import threading
import time
from typing import Self

import pytest

from tests.support.database import PROJECT_ROOT, apply_sql
from tests.support.environment import clean_environ
from tests.support.postgres_server import PASSWORD, PostgresServer
from tests.support.rows import thread_row
from tests.support.waiting import wait_until
from utils.infrastructure.backends.postgres_storage import PostgresStorage
from utils.infrastructure.backends.supabase_storage import SupabaseStorage
from utils.infrastructure.contract.json_envelope import MARKER
from utils.infrastructure.failover.failover_storage import DEGRADED, HEALTHY, FailoverStorage
from utils.infrastructure.failover.spool import Spool


class Workload:
    """A daemon-like writer: sets and reads back 20 threads in turn, recording what was acknowledged."""

    def __init__(self, storage) -> None:
        self.storage = storage
        self.acked: dict[str, dict] = {}
        self.errors: list[BaseException] = []
        self.writes = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run)

    def _run(self) -> None:
        i = 0
        while not self._stop.is_set():
            key, value = f"thread:w{i % 20}", {"i": i, "turns": ["x" * 200] * (i % 7)}
            try:
                self.storage.setex(key, 3600, json.dumps(value))
                self.acked[key] = value
                got = self.storage.get(key)
                # A read that finds the store gone just now (the write went
                # through) may miss; anything it returns must be right.
                assert got is None and self.storage.status()["state"] != HEALTHY or json.loads(got) == value
            except BaseException as exc:  # noqa: BLE001 (the test asserts there are none)
                self.errors.append(exc)
                return
            self.writes += 1
            i += 1
            time.sleep(0.002)

    def __enter__(self) -> Self:
        self._thread.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._stop.set()
        self._thread.join(timeout=30)


def _failover(primary, tmp_path) -> FailoverStorage:
    return FailoverStorage(primary, Spool(tmp_path / "spool.sqlite3"), first_probe_after=0.2, max_probe_interval=1.0)


def test_postgres_stopped_immediately_mid_workload_loses_nothing(tmp_path):
    with PostgresServer() as server:
        with server.connect() as conn:
            apply_sql(conn)
        primary = PostgresStorage(server.dsn_for("postgres", password=PASSWORD), connect_timeout=1, statement_timeout=2)
        with _failover(primary, tmp_path) as storage, Workload(storage) as work:
            # Counted writes, not seconds: a loaded machine may manage few of them in a fixed time.
            wait_until(lambda: work.writes >= 20 or work.errors, "writes while Postgres runs")
            server.stop("immediate")
            during = work.writes
            wait_until(lambda: work.writes - during > 10 or work.errors, "writes while Postgres is down")
            assert work.errors == []
            assert storage.status()["state"] == DEGRADED
            assert storage.status()["pending"] > 0
            written_in_outage = work.writes - during
            started = time.monotonic()
            server.start_process()
            assert storage.wait_until_healthy(30)
            recovery = time.monotonic() - started
        print(f"\n{written_in_outage} writes during the outage; recovered {recovery:.2f} s after restart")
        assert work.errors == []
        with server.connect() as conn:
            for key, value in work.acked.items():
                assert thread_row(conn, key) == value, key


@pytest.mark.parametrize("fault", ["503", "502", "504", "520", "hang", "close"])
def test_gateway_failures_lose_nothing(supabase_project, tmp_path, fault):
    gateway = supabase_project.gateway
    primary = SupabaseStorage(supabase_project.url, supabase_project.secret_key, timeout_seconds=0.5)
    try:
        with _failover(primary, tmp_path) as storage, Workload(storage) as work:
            wait_until(lambda: work.writes >= 10 or work.errors, "writes before the fault")
            gateway.fault = fault
            # The workload notices, then writes into the spool for a while: counted, not timed.
            wait_until(lambda: storage.status()["state"] == DEGRADED or work.errors, "the workload to notice the fault")
            assert storage.status()["state"] == DEGRADED, (storage.status(), work.errors)
            during = work.writes
            wait_until(lambda: work.writes - during >= 10 or work.errors, "writes into the spool")
            gateway.fault = None
            assert storage.wait_until_healthy(60), (storage.status(), work.errors)
    finally:
        gateway.fault = None
    assert work.errors == []
    with supabase_project.connect() as conn:
        for key, value in work.acked.items():
            assert thread_row(conn, key) == value, key


def test_reads_during_an_outage_are_served_from_the_spool(supabase_project, tmp_path):
    gateway = supabase_project.gateway
    primary = SupabaseStorage(supabase_project.url, supabase_project.secret_key, timeout_seconds=0.5)
    primary.setex("thread:before", 3600, '{"old": true}')
    try:
        with _failover(primary, tmp_path) as storage:
            gateway.fault = "503"
            storage.setex("thread:during", 3600, '{"new": true}')
            gateway.reset_counts()
            assert json.loads(storage.get("thread:during")) == {"new": True}
            assert storage.get("thread:before") is None  # unreachable, and not spooled: no error
            assert storage.delete("thread:during") is True
            assert storage.get("thread:during") is None
            calls = {name: n for name, n in gateway.counts.items() if name != "storage_health"}
            assert calls == {}, "an open circuit does not call the dead store"
            status = storage.status()
            assert (status["state"], status["pending"]) == (DEGRADED, 2)
            gateway.fault = None
            assert storage.wait_until_healthy(30)
            assert storage.get("thread:during") is None  # the delete was replayed too
    finally:
        gateway.fault = None


def test_nul_documents_written_during_an_outage_are_replayed_and_readable(supabase_project, tmp_path):
    gateway = supabase_project.gateway
    primary = SupabaseStorage(supabase_project.url, supabase_project.secret_key, timeout_seconds=0.5)
    document = json.dumps({"turns": ["tool output \u0000 with a NUL"]})

    def add_turn(current):
        thread = json.loads(current)
        thread["turns"].append("another \u0000")
        return json.dumps(thread)

    try:
        with _failover(primary, tmp_path) as storage:
            gateway.fault = "503"
            storage.setex("thread:nul", 3600, document)
            assert storage.status()["state"] == DEGRADED
            assert storage.get("thread:nul") == document  # from the spool
            updated = add_turn(storage.get("thread:nul"))
            storage.setex("thread:nul", 3600, updated)  # pal's next turn: spooled too
            assert storage.status()["pending"] == 2
            gateway.fault = None
            assert storage.wait_until_healthy(30)
            assert storage.get("thread:nul") == updated  # now from the store
    finally:
        gateway.fault = None
    with SupabaseStorage(supabase_project.url, supabase_project.secret_key) as another_daemon:
        assert another_daemon.get("thread:nul") == updated
    with supabase_project.connect() as conn:
        assert thread_row(conn, "thread:nul") == {MARKER: updated}, "replayed in the envelope"


@pytest.mark.parametrize("text", ["test_value", "plain\x00text", ""], ids=["text", "NUL", "empty"])
def test_text_written_during_an_outage_is_replayed_exactly(supabase_project, tmp_path, text):
    gateway = supabase_project.gateway
    primary = SupabaseStorage(supabase_project.url, supabase_project.secret_key, timeout_seconds=0.5)
    try:
        with _failover(primary, tmp_path) as storage:
            gateway.fault = "503"
            storage.setex("thread:text", 3600, text)
            assert storage.status()["state"] == DEGRADED
            assert storage.get("thread:text") == text  # from the spool
            gateway.fault = None
            assert storage.wait_until_healthy(30)
            assert storage.get("thread:text") == text  # now from the store
    finally:
        gateway.fault = None
    with SupabaseStorage(supabase_project.url, supabase_project.secret_key) as another_daemon:
        assert another_daemon.get("thread:text") == text
    with supabase_project.connect() as conn:
        pieces = text.split("\x00")
        assert thread_row(conn, "thread:text") == {MARKER: pieces if len(pieces) > 1 else text}


def test_replay_never_overwrites_a_newer_value(supabase_project, tmp_path):
    gateway = supabase_project.gateway
    primary = SupabaseStorage(supabase_project.url, supabase_project.secret_key, timeout_seconds=0.5)
    primary.setex("thread:rewritten", 3600, '{"v": "original"}')
    primary.setex("thread:kept-alive", 3600, '{"v": "original"}')
    primary.setex("thread:deleted", 3600, '{"v": "original"}')
    try:
        with _failover(primary, tmp_path) as storage:
            gateway.fault = "503"
            storage.setex("thread:rewritten", 3600, '{"v": "spooled"}')
            storage.delete("thread:kept-alive")
            storage.delete("thread:deleted")
            # The other daemon's writes must be later on the store's clock than the spooled ones
            # by more than the spool's estimate of that clock can be off; a fixed pause is not,
            # when a loaded machine makes the round trip behind that estimate long.
            stamped = max(storage.spool.latest(key).written_at
                          for key in ("thread:rewritten", "thread:kept-alive", "thread:deleted"))
            margin = (storage.clock.uncertainty or 0.0) + 0.01
            with supabase_project.connect() as conn:
                wait_until(lambda: conn.execute("select extract(epoch from clock_timestamp())::float8").fetchone()[0]
                           > stamped + margin, "the store's clock to pass the spooled writes")
            with supabase_project.connect() as conn:  # another daemon, which can reach the store
                conn.execute("select public.thread_set('thread:rewritten', '{\"v\": \"newer\"}', 3600)")
                conn.execute("select public.thread_set('thread:kept-alive', '{\"v\": \"newer\"}', 3600)")
            gateway.fault = None
            assert storage.wait_until_healthy(30)
    finally:
        gateway.fault = None
    with supabase_project.connect() as conn:
        assert thread_row(conn, "thread:rewritten") == {"v": "newer"}
        assert thread_row(conn, "thread:kept-alive") == {"v": "newer"}
        assert thread_row(conn, "thread:deleted") is None


WRITER = """
import sys, time
from utils.infrastructure.storage_backend import get_storage
storage = get_storage()
print(type(storage).__name__, storage.status()["state"], flush=True)
for i in range(30):
    storage.setex(f"thread:spooled{i}", 3600, '{"i": %d}' % i)
    print("acked", i, flush=True)
time.sleep(60)
"""


def test_writes_spooled_by_a_killed_daemon_are_replayed_by_the_next(supabase_project, tmp_path):
    gateway = supabase_project.gateway
    env = {
        **clean_environ(),
        "CONVERSATION_STORAGE_BACKEND": "supabase",
        "SUPABASE_URL": supabase_project.url,
        "SUPABASE_KEY": supabase_project.secret_key,
        "CONVERSATION_SPOOL_PATH": str(tmp_path / "spool.sqlite3"),
        "CONVERSATION_STORAGE_TIMEOUT_SECONDS": "1",
    }
    gateway.fault = "503"
    try:
        writer = subprocess.Popen([sys.executable, "-c", WRITER], cwd=PROJECT_ROOT, env=env,
                                  stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        first = writer.stdout.readline().split()
        acked = [line for line in (writer.stdout.readline() for _ in range(30)) if line.startswith("acked")]
        os.kill(writer.pid, signal.SIGKILL)
        writer.wait()
    finally:
        gateway.fault = None
    assert first == ["FailoverStorage", DEGRADED]
    assert len(acked) == 30
    with supabase_project.connect() as conn:
        assert conn.execute("select count(*) from public.conversation_threads").fetchone()[0] == 0

    reader = subprocess.run(
        [sys.executable, "-c",
         ("from utils.infrastructure.storage_backend import get_storage\n"
          "s = get_storage(); print(s.wait_until_healthy(30), s.status()['pending'])")],
        cwd=PROJECT_ROOT, env=env, capture_output=True, text=True, timeout=60, check=False,
    )
    assert reader.stdout.split() == ["True", "0"], reader.stderr
    with supabase_project.connect() as conn:
        rows = dict(conn.execute("select thread_id, conversation_data from public.conversation_threads").fetchall())
    assert rows == {f"thread:spooled{i}": {"i": i} for i in range(30)}


def test_startup_with_the_store_down_runs_on_the_spool_then_recovers(clean_env, supabase_project, caplog):
    import logging

    from utils.infrastructure.storage_backend import get_storage

    clean_env.setenv("CONVERSATION_STORAGE_BACKEND", "supabase")
    clean_env.setenv("SUPABASE_URL", supabase_project.url)
    clean_env.setenv("SUPABASE_KEY", supabase_project.secret_key)
    clean_env.setenv("CONVERSATION_STORAGE_TIMEOUT_SECONDS", "1")
    supabase_project.gateway.fault = "close"
    try:
        with caplog.at_level(logging.WARNING):
            storage = get_storage()
        assert isinstance(storage, FailoverStorage)
        assert "running on the failover spool" in caplog.text
        storage.setex("thread:early", 3600, '{"early": 1}')
    finally:
        supabase_project.gateway.fault = None
    assert storage.wait_until_healthy(30)
    assert storage.status()["state"] == HEALTHY
    with supabase_project.connect() as conn:
        assert thread_row(conn, "thread:early") == {"early": 1}


def test_an_open_circuit_probes_with_growing_pauses(supabase_project, tmp_path):
    gateway = supabase_project.gateway
    primary = SupabaseStorage(supabase_project.url, supabase_project.secret_key, timeout_seconds=0.5)
    probed = []
    health = primary.health
    primary.health = lambda: probed.append(time.monotonic()) or health()
    try:
        with _failover(primary, tmp_path) as storage:  # first probe after 0.2 s, doubling to 1 s
            probed.clear()  # the startup probe, taken while the store was up
            gateway.fault = "503"
            storage.setex("thread:x", 3600, "{}")
            gateway.reset_counts()
            for _ in range(200):  # a busy daemon during the outage
                storage.get("thread:x")
                storage.setex("thread:x", 3600, "{}")
            wait_until(lambda: len(probed) >= 4, "four probes of the open circuit")
            calls, first_four = dict(gateway.counts), probed[:4]
            gateway.fault = None
            assert storage.wait_until_healthy(30)
    finally:
        gateway.fault = None
    assert set(calls) == {"storage_health"}, "only probes reach the store while the circuit is open"
    # Each pause doubles up to 1 s, less at most 20 % jitter. A loaded machine only makes
    # pauses longer, so lower bounds hold however slow it is; equal pauses would fail them.
    pauses = [later - earlier for earlier, later in itertools.pairwise(first_four)]
    assert all(pause >= least for pause, least in zip(pauses, [0.32, 0.64, 0.8], strict=True)), pauses
