"""The store under the soak: Postgres, with the RPC gateway in front for ``supabase``."""

from __future__ import annotations

import re
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


class Store:
    """An outage stops Postgres (``pg_ctl -m immediate``); the gateway stays up through it."""

    def __init__(self, backend: str, run_dir: Path) -> None:
        from tests.support.database import PG_CRON_SETTINGS
        from tests.support.postgres_server import PostgresServer

        self.backend = backend
        self.run_dir = run_dir
        self.gateway: subprocess.Popen | None = None
        logged = {"log_min_duration_statement": "0"}
        if backend == "supabase":
            self.server = PostgresServer(superuser="supabase_admin", settings={**PG_CRON_SETTINGS, **logged})
        else:
            self.server = PostgresServer(settings=logged)
        self.up = False

    def start(self) -> dict[str, str]:
        """Start it; return the environment that points the library at it."""
        from tests.support.database import AUTHENTICATOR_PASSWORD, apply_sql, prepare_supabase_database
        from tests.support.local_supabase import JWT_SECRET
        from tests.support.postgres_server import PASSWORD, free_port

        self.server.start()
        self.up = True
        if self.backend == "postgres":
            with self.server.connect() as conn:
                apply_sql(conn)
            return {"CONVERSATION_STORAGE_BACKEND": "postgres",
                    "DATABASE_URL": self.server.dsn_for("postgres", password=PASSWORD)}
        with self.server.connect() as admin:
            prepare_supabase_database(admin)
        with self.server.connect(user="postgres") as owner:
            apply_sql(owner)
        # It stays up through the outages, as Supabase's API does when its database is down.
        port = free_port()
        dsn = self.server.dsn_for("postgres", user="authenticator", password=AUTHENTICATOR_PASSWORD)
        with open(self.run_dir / "gateway.err", "w") as err:
            self.gateway = subprocess.Popen(
                [sys.executable, "-m", "tests.support.rpc_gateway", "--port", str(port),
                 "--jwt-secret", JWT_SECRET, "--dsn", dsn],
                cwd=ROOT, stdout=subprocess.PIPE, stderr=err, text=True)
        self.gateway.stdout.readline()  # it listens; then the project's keys, one name=value a line
        keys = dict(self.gateway.stdout.readline().strip().split("=", 1) for _ in range(4))
        return {"CONVERSATION_STORAGE_BACKEND": "supabase", "SUPABASE_URL": f"http://127.0.0.1:{port}",
                "SUPABASE_KEY": keys["secret_key"]}

    def stop(self) -> None:
        self.server.stop("immediate")
        self.up = False

    def restart(self) -> None:
        self.server.start_process()
        self.up = True

    def rows(self) -> tuple[dict[str, tuple[object, str | None, float]], float]:
        """Every live document, its owner and the server's time of its last write, read directly; and when."""
        with self.server.connect() as conn:
            before = time.time()
            rows = conn.execute(
                "select thread_id, conversation_data, user_id, expires_at > now(),"
                " extract(epoch from updated_at)::float8 from public.conversation_threads").fetchall()
            at = (before + time.time()) / 2
        return {key: (data, owner, written) for key, data, owner, live, written in rows if live}, at

    def replay_calls(self) -> tuple[int, int]:
        """(completed replay calls, how many repeated an earlier call's parameters) from the server log.

        The statistics views would be simpler, but an immediate shutdown resets them. A replay call
        whose parameters equal an earlier one's replays the same spooled write again: a duplicate.
        """
        calls, seen, repeated = 0, set(), 0
        replay = False
        with open(self.server.logfile, errors="replace") as log:
            for line in log:
                if "LOG:  duration: " in line:
                    replay = bool(re.search(r"ms  execute [^:]*: .*thread_replay", line))
                    calls += replay
                elif replay and "DETAIL:  parameters: " in line:
                    params = line.split("DETAIL:  parameters: ", 1)[1]
                    repeated += params in seen
                    seen.add(params)
                    replay = False
        return calls, repeated

    def close(self) -> None:
        try:
            if self.gateway is not None:
                self.gateway.kill()
                self.gateway.wait()
        finally:
            self.server.cleanup()
