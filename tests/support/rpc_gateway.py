"""A stand-in for a Supabase project's HTTP API, for machines without PostgREST.

Two layers on loopback in front of a real PostgreSQL, so the real supabase-py
client can be tested end to end over HTTP:

``/rest/v1/...`` -- Supabase's API gateway, then PostgREST
    The gateway part (:mod:`tests.support.supabase_edge`) admits only the
    project's four API keys (legacy ``anon``/``service_role`` JWTs,
    ``sb_publishable_``/``sb_secret_`` keys) in ``apikey``, answers 401 with
    Supabase's own bodies otherwise (no API key, invalid API key, secret key
    from a browser's User-Agent), and hands PostgREST an ``Authorization``:
    a short-lived JWT of the key's role for an opaque key, the key itself for a
    legacy one, or the user's own token, passed through.

``/rpc/{fn}`` -- PostgREST alone, as on its own port
    No gateway: for tests of PostgREST's rules themselves.

The PostgREST part follows PostgREST's RPC rules (checked against its source,
Error.hs, Plan.hs, MainTx.hs, Auth.hs):

- Only ``Authorization: Bearer <jwt>`` is read (``apikey`` is the gateway's
  business). The JWT must be HS256, signed with the project's secret, valid
  within a 30 s clock skew; its ``role`` claim (as text) is the database role,
  the anon role when missing, and the resolved role is written back into the
  claims. No token, or a scheme other than Bearer, runs as anon. A bad token is
  401 ``PGRST301``, an expired or not-yet-valid one 401 ``PGRST303``.
- Functions come from a schema cache (:mod:`tests.support.schema_cache`),
  loaded at start and again on ``NOTIFY pgrst, 'reload schema'``: a function
  created since is 404 ``PGRST202``, a dropped one fails in Postgres (42883).
- One transaction per request, READ COMMITTED unless the function's own or
  else the role's ``default_transaction_isolation`` says otherwise, begun READ
  ONLY when the function is STABLE or IMMUTABLE (a write then fails with
  25006 -> 405), read-write when VOLATILE. In it, with ``set_config(...,
  true)``: ``search_path``, the role's settings that the login may set itself
  (``user`` context, or granted SET; e.g. statement_timeout, never a
  superuser-only one), ``role``, ``request.jwt.claims``; then the call. Any
  error rolls everything back. Role settings are read at start and on
  ``NOTIFY pgrst, 'reload config'``. A POST's schema is chosen by
  ``Content-Profile`` (406 ``PGRST106`` for any other than the exposed one).
- The JSON body's keys must be the function's required parameters plus any
  subset of its defaulted ones, else 404 ``PGRST202``. Arguments are typed by
  the function's declared parameter types through ``json_to_record``, so a
  badly typed value fails in Postgres (22P02 -> 400).
- Results: a scalar as bare JSON with 200, NULL as ``null``, void as 204 with
  no body, SETOF as a JSON array. Errors as ``{"code", "message", "details",
  "hint"}`` with ``Proxy-Status: PostgREST; error=CODE`` and PostgREST's
  SQLSTATE-to-HTTP mapping (:func:`http_status`), ``WWW-Authenticate`` on
  every 401, and ``RAISE SQLSTATE 'PGRST'`` setting status, body and headers.
- No free pooled connection within ``pool_timeout``: 504 ``PGRST003``. No
  connection to be had at all (server down, connections refused): 503
  ``PGRST000``; a connection lost mid-request: 503 ``PGRST001``.

What it does not do. Refused with an error: tables and views
(``/rest/v1/{table}``), GET/HEAD calls of functions, bulk calls with an array
body, a single unnamed json/jsonb parameter taking the whole body, ambiguous
overloads (PGRST203). Ignored, where PostgREST would act: ``Prefer`` headers
(params=single-object, count, tx=rollback, handling=strict), ``Accept`` media
types (the answer is always JSON), filters and ordering on RPC results, JWT
``aud`` checks, ``pre-request`` functions, a function's own statement_timeout
(PostgREST hoists it into the transaction). A schema reload is seen by every
request sent after its NOTIFY committed, where PostgREST reloads in the
background and a request right after may still find the old cache. Where
PostgREST fails a server-down request at once, this gateway waits for
``pool_timeout`` first. Nor does it stand in for what Supabase sets up in the
database around PostgREST: its global 2-minute statement limit (no request
to the test database gets near it: the roles' own timeouts, 8 s at most, come
first) and pg-safeupdate, which Supabase preloads for ``authenticator`` and
which refuses a DELETE or UPDATE without WHERE with 21000 (-> 400), inside
functions too, as it checks every statement the session parses: here such a
statement runs. Of Supabase's gateway it has no rate limits, CORS, request
size limits, JWT-signing-key (JWKS, asymmetric) support, other services
(auth, storage), no TLS, no HTTP/2, and no timeouts of its own: a slow
function is answered whenever it finishes, never 504 by the gateway unless
injected.

For tests it counts requests per function (:attr:`RpcGateway.counts`), and
:attr:`RpcGateway.fault` makes it misbehave the way a failing API does.
Through the gateway (``/rest/v1/``): ``"hang"`` never answers until the fault
is cleared, then drops the connection; ``"close"`` drops it at once;
``"520"`` answers a Cloudflare-style HTML page; ``"502"`` and ``"504"`` the
gateway's JSON errors (no ``code``, no ``Proxy-Status``); ``"429"`` a rate
limiter's refusal with ``Retry-After`` (generic wording). Everywhere:
``"503"`` is PostgREST's own 503 ``PGRST001``.
"""

from __future__ import annotations

import argparse
import json
import socket
import threading
import time
from collections import Counter
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Self

import jwt
import psycopg
from psycopg import IsolationLevel, sql
from psycopg_pool import ConnectionPool, PoolTimeout

from .schema_cache import Function, SchemaCache
from .supabase_edge import Edge, EdgeAnswer, ProjectKeys, fault_answer

EDGE_PREFIX = "/rest/v1"  # Supabase's gateway; what follows is PostgREST's path
RPC_PREFIX = "/rpc/"
JWT_LEEWAY_SECONDS = 30  # PostgREST's allowed clock skew on exp/nbf/iat
COUNTS_PATH = "/_gateway/counts"  # GET: requests so far per function (not PostgREST's)
EDGE_FAULTS = ("hang", "close", "502", "504", "520", "429")


class GatewayError(Exception):
    """An error answered to the client as PostgREST would."""

    def __init__(self, status: int, code: str | None, message: str, *, details=None, hint=None, headers=None):
        super().__init__(message)
        self.status = status
        self.body = {"code": code, "message": message, "details": details, "hint": hint}
        self.headers = dict(headers or {})
        if code:
            self.headers.setdefault("Proxy-Status", f"PostgREST; error={code}")


def http_status(sqlstate: str, authenticated: bool) -> int:
    """PostgREST's mapping of a SQLSTATE to an HTTP status."""
    exact = {
        "21000": 500, "23503": 409, "23505": 409, "25006": 405, "53400": 500, "57P01": 503,
        "P0001": 400, "42883": 404, "42P01": 404, "42P17": 500,
    }
    if sqlstate == "42501":
        return 403 if authenticated else 401
    if sqlstate in exact:
        return exact[sqlstate]
    if sqlstate.startswith("PT"):
        try:
            return int(sqlstate[2:])
        except ValueError:
            return 500
    by_class = {
        "08": 503, "09": 500, "0L": 403, "0P": 403, "25": 500, "28": 403, "2D": 500,
        "38": 500, "39": 500, "3B": 500, "40": 500, "53": 503, "54": 500, "55": 500,
        "57": 500, "58": 500, "F0": 500, "HV": 500, "P0": 500, "XX": 500,
    }
    return by_class.get(sqlstate[:2], 400)


ISOLATION_LEVELS = {
    "read uncommitted": IsolationLevel.READ_UNCOMMITTED, "read committed": IsolationLevel.READ_COMMITTED,
    "repeatable read": IsolationLevel.REPEATABLE_READ, "serializable": IsolationLevel.SERIALIZABLE,
}


class RpcGateway:
    """Serve Supabase's API (gateway + PostgREST RPC) on loopback in front of ``dsn`` (the authenticator's).

    ``keys`` are the project's API keys (generated when not given, see :attr:`keys`).
    """

    def __init__(
        self,
        dsn: str,
        jwt_secret: str,
        *,
        keys: ProjectKeys | None = None,
        schema: str = "public",
        anon_role: str = "anon",
        host: str = "127.0.0.1",
        port: int = 0,
        pool_size: int = 10,
        pool_timeout: float = 5.0,
    ) -> None:
        self.dsn = dsn
        self.jwt_secret = jwt_secret
        self.keys = keys or ProjectKeys.generate(jwt_secret)
        self.edge = Edge(self.keys, jwt_secret)
        self.schema = schema
        self.anon_role = anon_role
        self.counts: Counter[str] = Counter()
        self.fault: str | None = None
        self._counts_lock = threading.Lock()
        self._pool_size = pool_size
        self._busy = 0  # connections held by requests: tells an exhausted pool from a dead server
        self._busy_lock = threading.Lock()
        self._pool = ConnectionPool(
            dsn, min_size=1, max_size=pool_size, timeout=pool_timeout, open=False,
            kwargs={"autocommit": False},
            # Like PostgREST, recover from a database restart instead of
            # failing once per pooled connection that the restart broke.
            check=ConnectionPool.check_connection,
        )
        self._server = _Server((host, port), _Handler)
        self._server.gateway = self  # type: ignore[attr-defined]
        self._thread: threading.Thread | None = None
        #: The exposed schema's functions as PostgREST caches them (schema_cache.py).
        self.schema_cache = SchemaCache(dsn, schema, wait_timeout=pool_timeout)

    @property
    def url(self) -> str:
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}"

    @property
    def request_count(self) -> int:
        with self._counts_lock:
            return sum(self.counts.values())

    def reset_counts(self) -> None:
        with self._counts_lock:
            self.counts.clear()

    def start(self) -> RpcGateway:
        self._pool.open(wait=True, timeout=30)
        self.schema_cache.start()
        self._thread = threading.Thread(target=self._server.serve_forever, name="rpc-gateway", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        self.schema_cache.stop()
        self._pool.close()

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    # -- request handling (the PostgREST part) ------------------------------------

    def count(self, function: str) -> None:
        with self._counts_lock:
            self.counts[function] += 1

    def handle_rpc(self, function: str, headers: Mapping[str, str], body: bytes) -> tuple[int, bytes | None]:
        """Run one RPC request (``headers`` with lower-case names); return (status, JSON body or None for 204)."""
        self._check_profile(headers)
        claims = self._claims(headers)
        role = claims.get("role")
        role = self.anon_role if role is None or role == "" else str(role)
        authenticated = role != self.anon_role
        claims = {**claims, "role": role}  # PostgREST adds the resolved role
        args = self._arguments(body)
        self.schema_cache.catch_up()
        target = self._find_function(function, set(args))
        try:
            with self._connection() as conn:
                # PostgREST opens the transaction with both: BEGIN ISOLATION LEVEL ... READ ONLY.
                conn.read_only = target.read_only
                conn.isolation_level = self._isolation(target, role)
                with conn.transaction():
                    self._begin(conn, role, claims)
                    return self._call(conn, target, args)
        except psycopg.Error as exc:
            raise self._database_error(exc, authenticated) from exc

    @contextmanager
    def _connection(self) -> Iterator[psycopg.Connection]:
        try:
            with self._pool.connection() as conn:
                with self._busy_lock:
                    self._busy += 1
                try:
                    yield conn
                finally:
                    with self._busy_lock:
                        self._busy -= 1
        except PoolTimeout as exc:
            with self._busy_lock:
                exhausted = self._busy >= self._pool_size
            if exhausted:  # every connection is serving a request (Error.hs: AcquisitionTimeoutUsageError)
                raise GatewayError(504, "PGRST003", "Timed out acquiring connection from connection pool.") from exc
            raise GatewayError(503, "PGRST000", "Database connection error.", details=str(exc)) from exc

    def _check_profile(self, headers: Mapping[str, str]) -> None:
        # A POST names its schema with Content-Profile; Accept-Profile is for reads.
        profile = headers.get("content-profile")
        if profile and profile != self.schema:
            raise GatewayError(406, "PGRST106", f"The schema must be one of the following: {self.schema}")

    def _claims(self, headers: Mapping[str, str]) -> dict[str, Any]:
        authorization = headers.get("authorization")
        if not authorization:
            return {}
        scheme, _, token = authorization.partition(" ")
        if scheme.lower() != "bearer":
            return {}  # PostgREST ignores other schemes: the request runs as anon
        try:
            claims = jwt.decode(token.strip(), self.jwt_secret, algorithms=["HS256"], leeway=JWT_LEEWAY_SECONDS,
                                options={"verify_aud": False})
        except jwt.ExpiredSignatureError:
            raise self._jwt_error("PGRST303", "JWT expired") from None
        except jwt.ImmatureSignatureError as exc:
            message = "JWT issued at future" if "iat" in str(exc) else "JWT not yet valid"
            raise self._jwt_error("PGRST303", message) from None
        except jwt.InvalidTokenError as exc:
            raise self._jwt_error("PGRST301", f"JWSError: {exc}") from None
        if not isinstance(claims, dict):
            raise self._jwt_error("PGRST301", "JWT claims are not an object")
        return claims

    @staticmethod
    def _jwt_error(code: str, message: str) -> GatewayError:
        return GatewayError(401, code, message,
                            headers={"WWW-Authenticate": f'Bearer error="invalid_token", error_description="{message}"'})

    @staticmethod
    def _arguments(body: bytes) -> dict[str, Any]:
        if not body.strip():
            return {}
        try:
            args = json.loads(body)
        except ValueError as exc:
            raise GatewayError(400, "PGRST102", "Empty or invalid json", details=str(exc)) from None
        if not isinstance(args, dict):
            raise GatewayError(400, "PGRST102",
                               "This gateway only accepts a JSON object of named arguments (bulk calls are not implemented)")
        return args

    def _isolation(self, target: Function, role: str) -> IsolationLevel:
        level = target.isolation or self.schema_cache.role_isolation.get(role) or "read committed"
        return ISOLATION_LEVELS.get(level.lower(), IsolationLevel.READ_COMMITTED)

    def _begin(self, conn: psycopg.Connection, role: str, claims: dict[str, Any]) -> None:
        # PostgREST's order: the role's settings are set by the login itself, before switching role.
        settings = [("search_path", f'"{self.schema}"'), *self.schema_cache.role_settings.get(role, ())]
        settings += [("role", role), ("request.jwt.claims", json.dumps(claims))]
        query = "select " + ", ".join(["set_config(%s, %s, true)"] * len(settings))
        conn.execute(query, [value for pair in settings for value in pair])

    def _find_function(self, name: str, keys: set[str]) -> Function:
        candidates = [f for f in self.schema_cache.functions(name) if f.accepts(keys)]
        if len(candidates) == 1:
            return candidates[0]
        if len(candidates) > 1:
            raise GatewayError(300, "PGRST203", f"Could not choose the best candidate function between overloads of {self.schema}.{name}")
        qualified = f"{self.schema}.{name}"
        shown = ", ".join(sorted(keys))
        if not keys:
            message = f"Could not find the function {qualified} without parameters in the schema cache"
            searched = f"{qualified} without parameters"
        else:
            message = f"Could not find the function {qualified}({shown}) in the schema cache"
            searched = f"{qualified} with parameter{'s' if len(keys) > 1 else ''} {shown}"
        raise GatewayError(
            404, "PGRST202", message,
            details=f"Searched for the function {searched} or with a single unnamed json/jsonb parameter,"
                    " but no matches were found in the schema cache.",
        )

    @staticmethod
    def _call(conn: psycopg.Connection, fn: Function, args: dict[str, Any]) -> tuple[int, bytes | None]:
        given = [(name, type_name) for name, type_name in fn.inputs if name in args]
        target = sql.SQL("{}.{}").format(sql.Identifier(fn.schema), sql.Identifier(fn.name))
        call_args = sql.SQL(", ").join(
            sql.SQL("{} := _args.{}").format(sql.Identifier(n), sql.Identifier(n)) for n, _ in given
        )
        call = sql.SQL("lateral {}({}) as _r").format(target, call_args)
        if given:
            record = sql.SQL(", ").join(
                sql.SQL("{} {}").format(sql.Identifier(n), sql.SQL(t)) for n, t in given
            )
            source = sql.SQL("json_to_record(%s::json) as _args({}), {}").format(record, call)
            params: tuple = (json.dumps({n: args[n] for n, _ in given}),)
        else:
            source, params = call, ()
        if fn.returns_void:
            conn.execute(sql.SQL("select from {}").format(source), params)
            return 204, None
        if fn.returns_set:
            query = sql.SQL("select coalesce(json_agg(_r), '[]')::text from {}").format(source)
        else:
            query = sql.SQL("select to_json(_r)::text from {}").format(source)
        row = conn.execute(query, params).fetchone()
        value = row[0] if row else None
        return 200, (value if value is not None else "null").encode()

    def _database_error(self, exc: psycopg.Error, authenticated: bool) -> GatewayError:
        sqlstate = exc.sqlstate
        if not sqlstate:
            # Lost connection or server gone: PostgREST answers 503.
            return GatewayError(503, "PGRST001", "Database client error. Retrying the connection.", details=str(exc))
        diag = exc.diag
        message = diag.message_primary or str(exc)
        if sqlstate == "PGRST":
            return self._raised_response(message, diag.message_detail)
        status = http_status(sqlstate, authenticated)
        if sqlstate == "21000" and message.endswith("requires a WHERE clause"):
            status = 400  # pg-safeupdate's refusal is the client's fault
        headers = {"WWW-Authenticate": "Bearer"} if status == 401 else {}
        return GatewayError(status, sqlstate, message, details=diag.message_detail,
                            hint=diag.message_hint, headers=headers)

    @staticmethod
    def _raised_response(message: str, detail: str | None) -> GatewayError:
        """RAISE SQLSTATE 'PGRST': the function sets the error body, status and headers."""
        try:
            body = json.loads(message)
            spec = json.loads(detail or "")
            status = int(spec["status"])
            headers = {str(k): str(v) for k, v in (spec.get("headers") or {}).items()}
            if not isinstance(body, dict):
                raise TypeError("message is not an object")
        except (ValueError, KeyError, TypeError, AttributeError):
            return GatewayError(500, "PGRST121", "Could not parse JSON in the RAISE SQLSTATE 'PGRST' error",
                                details=f"message: {message}; detail: {detail}")
        error = GatewayError(status, None, "", headers=headers)
        error.body = {key: body.get(key) for key in ("code", "message", "details", "hint")}
        return error


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    # The default backlog of 5 resets connections under a burst of clients.
    request_queue_size = 128


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive, as the client expects
    server_version = "rpc-gateway"

    def setup(self) -> None:
        super().setup()
        # Headers and body go out in separate writes; without TCP_NODELAY the
        # second one waits for the client's delayed ACK (~40 ms per request).
        self.request.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def do_POST(self) -> None:
        self._dispatch("POST")

    def do_GET(self) -> None:
        gateway: RpcGateway = self.server.gateway  # type: ignore[attr-defined]
        if self.path == COUNTS_PATH:  # for benchmarks running the gateway as a separate process
            self.rfile.read(int(self.headers.get("Content-Length") or 0))
            with gateway._counts_lock:
                self._send(200, json.dumps(dict(gateway.counts)).encode(), {})
            return
        self._dispatch("GET")

    def _dispatch(self, method: str) -> None:
        gateway: RpcGateway = self.server.gateway  # type: ignore[attr-defined]
        body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        path, _, query = self.path.partition("?")
        through_edge = path.startswith(EDGE_PREFIX + "/")
        postgrest_path = path[len(EDGE_PREFIX):] if through_edge else path
        function = postgrest_path[len(RPC_PREFIX):] if postgrest_path.startswith(RPC_PREFIX) else None
        gateway.count(function or path)
        fault = gateway.fault
        try:
            headers = {name.lower(): value for name, value in self.headers.items()}
            if through_edge:
                if fault in ("hang", "close"):
                    self._drop_connection(gateway, fault)
                    return
                if fault in ("520", "429", "408"):  # the CDN / rate limiter / proxy in front answers first
                    raise fault_answer(fault)
                headers = gateway.edge.admit(headers, query)
                if fault in ("502", "504"):  # the gateway gave up on PostgREST
                    raise fault_answer(fault)
            if fault == "503":
                raise GatewayError(503, "PGRST001", "Database client error. Retrying the connection.",
                                   details="injected fault")
            if method != "POST":
                raise GatewayError(405, None, "this gateway implements POST /rpc/{fn} only")
            if not function:
                raise GatewayError(404, "PGRST125", f"Invalid path specified in request URL: {self.path}"
                                                    " (this gateway serves RPC only)")
            status, payload = gateway.handle_rpc(function, headers, body)
        except EdgeAnswer as answer:
            self._send(answer.status, answer.body, answer.headers)
        except GatewayError as exc:
            self._send(exc.status, json.dumps(exc.body).encode(), exc.headers)
        except Exception as exc:  # noqa: BLE001 (a gateway bug must still answer, not hang the client)
            self._send(500, json.dumps({"code": "PGRST000", "message": f"gateway error: {exc}",
                                        "details": None, "hint": None}).encode(), {})
        else:
            self._send(status, payload, {})

    def _drop_connection(self, gateway: RpcGateway, fault: str) -> None:
        if fault == "hang":
            deadline = time.monotonic() + 60
            while gateway.fault == "hang" and time.monotonic() < deadline:
                time.sleep(0.05)
        self.close_connection = True
        self.request.shutdown(socket.SHUT_RDWR)

    def _send(self, status: int, payload: bytes | None, headers: dict[str, str]) -> None:
        self.send_response(status)
        for name, value in headers.items():
            self.send_header(name, value)
        if payload is None:
            self.send_header("Content-Length", "0")
            self.end_headers()
            return
        if not any(name.lower() == "content-type" for name in headers):
            self.send_header("Content-Type", "application/json; charset=utf-8")
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload)

    def log_message(self, format: str, *args: Any) -> None:
        pass  # tests read counts, not access logs


def main() -> None:
    parser = argparse.ArgumentParser(description="Supabase-style API (gateway + PostgREST RPC) for local testing")
    parser.add_argument("--dsn", required=True, help="connection string of the authenticator role")
    parser.add_argument("--jwt-secret", required=True)
    parser.add_argument("--port", type=int, default=54321)
    args = parser.parse_args()
    gateway = RpcGateway(args.dsn, args.jwt_secret, port=args.port).start()
    # First line: the gateway listens. Then the project's keys, one name=value a line.
    print(f"RPC gateway on {gateway.url}{EDGE_PREFIX}/rpc/ (bare PostgREST on {gateway.url}{RPC_PREFIX})"
          " -- Ctrl-C to stop", flush=True)
    for name, key in gateway.keys.as_dict().items():
        print(f"{name}={key}", flush=True)
    try:
        threading.Event().wait()
    except KeyboardInterrupt:
        gateway.stop()


if __name__ == "__main__":
    main()
