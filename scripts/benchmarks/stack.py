"""The servers a benchmark run needs, started and stopped by the run itself."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from tests.support import reaper
from tests.support.database import (
    AUTHENTICATOR_PASSWORD,
    PG_CRON_SETTINGS,
    apply_sql,
    prepare_supabase_database,
)
from tests.support.local_supabase import JWT_SECRET
from tests.support.postgres_server import PASSWORD, PostgresServer, free_port
from tests.support.rpc_gateway import COUNTS_PATH


class Stack:
    """A durable Postgres (fsync on) set up like Supabase's, the RPC gateway as a process of its own,
    and redis-server if installed."""

    def __init__(self, settings: dict[str, str] | None = None) -> None:
        # Set up as Supabase sets up a project (see tests/support/supabase_init.sql);
        # the postgres backend connects as the project owner, as users do.
        self.postgres = PostgresServer(durable=True, superuser="supabase_admin",
                                       settings={**PG_CRON_SETTINGS, **(settings or {})}).start()
        with self.postgres.connect() as admin:
            prepare_supabase_database(admin)
            self.postgres_version = admin.execute("show server_version").fetchone()[0]
        with self.postgres.connect(user="postgres") as owner:
            apply_sql(owner)
        self.dsn = self.postgres.dsn_for("postgres", user="postgres", password=PASSWORD)
        self.admin_dsn = self.postgres.dsn_for("postgres", password=PASSWORD)
        port = free_port()
        self._gateway = subprocess.Popen(
            [sys.executable, "-m", "tests.support.rpc_gateway", "--port", str(port), "--jwt-secret", JWT_SECRET,
             "--dsn", self.postgres.dsn_for("postgres", user="authenticator", password=AUTHENTICATOR_PASSWORD)],
            cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        )
        # A child outlives a run killed by a signal: the reaper stops it then, and at exit.
        self._reaped = [reaper.register_process(self._gateway)]
        self._gateway.stdout.readline()  # "RPC gateway on ..." once it listens
        # Then the project's keys, name=value: its gateway accepts no others.
        keys = dict(self._gateway.stdout.readline().strip().split("=", 1) for _ in range(4))
        # Keep the pipe drained: a child blocked writing to a full one stops answering requests.
        threading.Thread(target=self._gateway.stdout.read, daemon=True).start()
        self.supabase_url = f"http://127.0.0.1:{port}"
        self.service_role_key = keys["service_role_key"]
        self.secret_key = keys["secret_key"]
        self.redis_port: int | None = None
        self._redis: subprocess.Popen | None = None
        if shutil.which("redis-server"):
            self.redis_port = free_port()
            self._redis = subprocess.Popen(
                ["redis-server", "--port", str(self.redis_port), "--bind", "127.0.0.1", "--save", "",
                 "--appendonly", "no"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
            )
            self._reaped.append(reaper.register_process(self._redis))
            _wait_port(self.redis_port)

    @property
    def gateway_pid(self) -> int:
        return self._gateway.pid

    @property
    def redis_pid(self) -> int | None:
        return self._redis.pid if self._redis is not None else None

    def pin(self, cpus: set[int]) -> None:
        """Run this process, the postmaster (so every backend started from now on), redis and the gateway on ``cpus``.

        What ``taskset -c cpu`` does. On two cores a round trip costs about
        36 µs when client and server share a core and about 110 µs when they
        do not, and the scheduler picks either for a connection's life: pinned,
        every contender of a run pays the same placement. ``all_cpus()`` undoes it.
        """
        pids = [0, self.postgres.postmaster_pid, self._gateway.pid]
        if self._redis is not None:
            pids.append(self._redis.pid)
        for pid in pids:
            os.sched_setaffinity(pid, cpus)

    def gateway_requests(self) -> int:
        return sum(httpx.get(self.supabase_url + COUNTS_PATH).json().values())

    def close(self) -> None:
        for process in (self._gateway, self._redis):
            if process is not None:
                process.terminate()
                process.wait(timeout=10)
        for token in self._reaped:
            reaper.unregister(token)
        self.postgres.cleanup()


def all_cpus() -> set[int]:
    return set(range(os.cpu_count() or 1))


def _wait_port(port: int, timeout: float = 10) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError(f"nothing listens on port {port}")
