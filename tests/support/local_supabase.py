"""A local stand-in for a Supabase project: real Postgres, Supabase's roles, the
project's sql/ applied, and the RPC gateway in front, with API keys to match.
"""

from __future__ import annotations

import pytest

from .database import AUTHENTICATOR_PASSWORD, PG_CRON_SETTINGS, apply_sql, prepare_supabase_database
from .postgres_server import PostgresServer
from .rpc_gateway import RpcGateway
from .supabase_edge import JWT_SECRET, make_key  # tests import both from here too


class LocalSupabase:
    """A cluster of its own set up as Supabase sets up a project, sql/ applied, the gateway in front.

    As on Supabase: the superuser is ``supabase_admin``, the project's
    database is ``postgres``, pg_cron is preloaded and enabled with Supabase's
    grants, and sql/ is applied by the role ``postgres``, which is not a
    superuser (as in the dashboard's SQL editor). ``apply_schema=False``
    leaves sql/ out, like a project nobody has set up yet;
    ``pg_cron_enabled=False`` leaves pg_cron to be enabled later, which
    ``postgres`` may do itself with ``create extension pg_cron``.

    Not recreated: the auth, storage and realtime schemas; supautils, except
    that ``postgres`` may create pg_cron (emulated with event triggers, see
    supabase_init.sql); pgsodium; pg_cron actually launching jobs
    (``cron.max_running_jobs=0``); Supavisor (no transaction pooler on port
    6543); network latency and TLS. The gateway's own gaps are listed in
    rpc_gateway.py. Recreated besides: the gateway's schema cache and
    Supabase's event triggers that reload it after DDL (schema_cache.py).
    """

    def __init__(self, *, apply_schema: bool = True, durable: bool = False, pg_cron_enabled: bool = True) -> None:
        self.server = PostgresServer(superuser="supabase_admin", settings=PG_CRON_SETTINGS, durable=durable)
        self.dbname = "postgres"
        self.server.start()
        try:
            with self.server.connect() as admin:
                prepare_supabase_database(admin)
                if not pg_cron_enabled:
                    admin.execute("drop extension pg_cron")
            if apply_schema:
                with self.connect_as_owner() as owner:
                    apply_sql(owner)
            self.gateway = RpcGateway(
                self.server.dsn_for(self.dbname, user="authenticator", password=AUTHENTICATOR_PASSWORD), JWT_SECRET
            ).start()
        except BaseException:
            self.server.cleanup()
            raise
        self.url = self.gateway.url
        # The project's keys: the gateway accepts no other value as apikey.
        self.keys = self.gateway.keys
        self.anon_key, self.service_role_key = self.keys.anon, self.keys.service_role
        self.publishable_key, self.secret_key = self.keys.publishable, self.keys.secret
        # A signed-in user's token: sent as Authorization, with apikey = anon or publishable key.
        self.authenticated_key = make_key("authenticated", expires_in=3600, sub="user-1", aud="authenticated")

    def connect(self):
        """A superuser connection to the project's database, for checking rows in SQL."""
        return self.server.connect(self.dbname)

    def connect_as_owner(self):
        """A connection as ``postgres``, the role a project's owner works as (SQL editor, migrations)."""
        return self.server.connect(self.dbname, user="postgres")

    def close(self) -> None:
        self.gateway.stop()
        self.server.cleanup()


@pytest.fixture(scope="module", name="local_supabase")
def module_local_supabase():
    """A stand-in of one test module's own, in place of the session's.

    For a module whose DDL, role settings (cluster-wide) or bulk rows must not
    reach other tests: import it there, saying why.
    """
    stack = LocalSupabase()
    yield stack
    stack.close()
