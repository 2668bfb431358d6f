"""A local stand-in for a Supabase project: real Postgres, Supabase's roles, the
project's sql/ applied, and the RPC gateway in front, with API keys to match.
"""

from __future__ import annotations

import time

import jwt

from .database import AUTHENTICATOR_PASSWORD, apply_sql, prepare_supabase_database
from .postgres_server import PostgresServer
from .rpc_gateway import RpcGateway

JWT_SECRET = "local-test-jwt-secret-with-at-least-32-characters"


PROJECT_KEY_LIFETIME = 10 * 365 * 24 * 3600  # Supabase's anon/service_role keys last ~10 years


def make_key(
    role: str | None, *, secret: str = JWT_SECRET, expires_in: int = PROJECT_KEY_LIFETIME, issued_ago: int = 86400, **claims
) -> str:
    """An API key / user token as Supabase issues them: an HS256 JWT with a role claim."""
    now = int(time.time())
    payload = {"iss": "supabase", "iat": now - issued_ago, "exp": now + expires_in, **claims}
    if role is not None:
        payload["role"] = role
    return jwt.encode(payload, secret, algorithm="HS256")


class LocalSupabase:
    """Database ``dbname`` on ``server``, prepared like a Supabase project, behind the gateway.

    ``apply_schema=False`` leaves out sql/, like a project nobody has set up yet.
    """

    def __init__(self, server: PostgresServer, dbname: str = "supabase", *, apply_schema: bool = True) -> None:
        self.server = server
        self.dbname = server.create_database(dbname)
        with server.connect(dbname) as conn:
            prepare_supabase_database(conn)
            if apply_schema:
                apply_sql(conn)
        self.gateway = RpcGateway(
            server.dsn_for(dbname, user="authenticator", password=AUTHENTICATOR_PASSWORD), JWT_SECRET
        ).start()
        self.url = self.gateway.url
        self.service_role_key = make_key("service_role")
        self.anon_key = make_key("anon")
        self.authenticated_key = make_key("authenticated", expires_in=3600, sub="user-1", aud="authenticated")

    def connect(self):
        """A superuser connection to the project's database, for checking rows in SQL."""
        return self.server.connect(self.dbname)

    def close(self) -> None:
        self.gateway.stop()
