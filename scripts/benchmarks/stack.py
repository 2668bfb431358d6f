"""The servers a benchmark run needs, started and stopped by the run itself."""

from __future__ import annotations

import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from tests.support.database import AUTHENTICATOR_PASSWORD, apply_sql, prepare_supabase_database  # noqa: E402
from tests.support.local_supabase import JWT_SECRET, make_key  # noqa: E402
from tests.support.postgres_server import PASSWORD, PostgresServer, free_port  # noqa: E402
from tests.support.rpc_gateway import COUNTS_PATH  # noqa: E402


class Stack:
    """A durable Postgres (fsync on), the RPC gateway as a process of its own, and redis-server if installed."""

    def __init__(self) -> None:
        self.postgres = PostgresServer(durable=True).start()
        with self.postgres.connect() as conn:
            prepare_supabase_database(conn)
            apply_sql(conn)
            self.postgres_version = conn.execute("show server_version").fetchone()[0]
        self.dsn = self.postgres.dsn_for("postgres", password=PASSWORD)
        port = free_port()
        self._gateway = subprocess.Popen(
            [sys.executable, "-m", "tests.support.rpc_gateway", "--port", str(port), "--jwt-secret", JWT_SECRET,
             "--dsn", self.postgres.dsn_for("postgres", user="authenticator", password=AUTHENTICATOR_PASSWORD)],
            cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        )
        self._gateway.stdout.readline()  # "RPC gateway on ..." once it listens
        self.supabase_url = f"http://127.0.0.1:{port}"
        self.service_role_key = make_key("service_role")
        self.redis_port: int | None = None
        self._redis: subprocess.Popen | None = None
        if shutil.which("redis-server"):
            self.redis_port = free_port()
            self._redis = subprocess.Popen(
                ["redis-server", "--port", str(self.redis_port), "--bind", "127.0.0.1", "--save", "",
                 "--appendonly", "no"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
            )
            _wait_port(self.redis_port)

    def gateway_requests(self) -> int:
        return sum(httpx.get(self.supabase_url + COUNTS_PATH).json().values())

    def transactions(self) -> int:
        with self.postgres.connect() as conn:
            return conn.execute(
                "select xact_commit + xact_rollback from pg_stat_database where datname = 'postgres'"
            ).fetchone()[0]

    def close(self) -> None:
        for process in (self._gateway, self._redis):
            if process is not None:
                process.terminate()
                process.wait(timeout=10)
        self.postgres.cleanup()


def _wait_port(port: int, timeout: float = 10) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError(f"nothing listens on port {port}")
