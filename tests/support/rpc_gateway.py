"""A PostgREST-compatible RPC gateway, for tests on machines without PostgREST.

It stands in for Supabase's API (its key check and PostgREST's RPC endpoint)
in front of a real PostgreSQL, so the real supabase-py client can be tested
end to end over HTTP. It follows PostgREST's documented RPC rules:

- ``POST /rest/v1/rpc/{fn}`` (also ``/rpc/{fn}``); header names are
  case-insensitive.
- The token is ``Authorization: Bearer <jwt>``, or the ``apikey`` header when
  there is no Authorization header (what Supabase's API gateway does). It must
  be an HS256 JWT signed with the project's secret, valid within PostgREST's
  30 s clock skew; its ``role`` claim (as text) is the database role, the anon
  role when missing, and the resolved role is written back into the claims.
  No token at all is refused with 401 like Supabase's API gateway; a bad token
  is 401 ``PGRST301``, an expired or not-yet-valid one 401 ``PGRST303``; an
  Authorization scheme other than Bearer runs as anon.
- One transaction per request: ``set_config('role', ..., true)``,
  ``set_config('request.jwt.claims', ..., true)``, the role's own settings
  (e.g. statement_timeout), ``search_path``, then the call; any error rolls
  everything back. A POST's schema is chosen by ``Content-Profile`` (406
  ``PGRST106`` for any other than the exposed one).
- The JSON body's keys must be the function's required parameters plus any
  subset of its defaulted ones, else 404 ``PGRST202``. Arguments are typed by
  the function's declared parameter types through ``json_to_record``, as
  PostgREST does, so a badly typed value fails in Postgres (22P02 -> 400).
- Results: a scalar as bare JSON with 200, NULL as ``null``, void as 204 with
  no body, SETOF as a JSON array. Errors as ``{"code", "message", "details",
  "hint"}`` with ``Proxy-Status: PostgREST; error=CODE`` and PostgREST's
  SQLSTATE-to-HTTP mapping (:func:`http_status`), ``WWW-Authenticate`` on
  every 401, and ``RAISE SQLSTATE 'PGRST'`` setting status, body and headers.

Refused with an error: tables and views (``/rest/v1/{table}``), GET/HEAD calls
of functions, bulk calls with an array body, a single unnamed json/jsonb
parameter taking the whole body, and ambiguous overloads (PGRST203).
Ignored, where PostgREST would act: ``Prefer`` headers (params=single-object,
count, tx=rollback), ``Accept`` media types (the answer is always JSON),
filters and ordering on RPC results, JWT ``aud`` checks, ``pre-request``
functions. Not modelled from Supabase's API gateway: it also demands an
``apikey`` that is one of the project's keys; this gateway accepts any valid
JWT, in either header. There is no schema cache: functions are looked up on
every request, so schema changes are visible at once (PostgREST needs
``NOTIFY pgrst, 'reload schema'``).

For tests it counts requests per function (:attr:`RpcGateway.counts`), and
:attr:`RpcGateway.fault` makes it misbehave the way a failing API does:
``"503"`` answers 503 PGRST001, ``"hang"`` never answers (until the fault is
cleared), ``"close"`` drops the connection without an answer.
"""

from __future__ import annotations

import argparse
import json
import socket
import threading
import time
from collections import Counter
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import jwt
import psycopg
from psycopg import sql
from psycopg_pool import ConnectionPool, PoolTimeout

RPC_PREFIXES = ("/rest/v1/rpc/", "/rpc/")
JWT_LEEWAY_SECONDS = 30
COUNTS_PATH = "/_gateway/counts"  # GET: requests so far per function (not PostgREST's)  # PostgREST's allowed clock skew on exp/nbf/iat


class GatewayError(Exception):
    """An error answered to the client as PostgREST would."""

    def __init__(self, status: int, code: str | None, message: str, *, details=None, hint=None, headers=None):
        super().__init__(message)
        self.status = status
        self.body = {"code": code, "message": message, "details": details, "hint": hint}
        self.headers = dict(headers or {})
        if code:
            self.headers.setdefault("Proxy-Status", f"PostgREST; error={code}")


@dataclass(frozen=True)
class Function:
    schema: str
    name: str
    inputs: tuple[tuple[str, str], ...]  # (parameter name, declared type), in order
    n_defaults: int
    returns_set: bool
    returns_void: bool

    @property
    def required(self) -> set[str]:
        return {name for name, _ in self.inputs[: len(self.inputs) - self.n_defaults]}

    @property
    def all_names(self) -> set[str]:
        return {name for name, _ in self.inputs}

    def accepts(self, keys: set[str]) -> bool:
        return self.required <= keys <= self.all_names


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


class RpcGateway:
    """Serve PostgREST-style RPC on loopback in front of ``dsn`` (the authenticator's)."""

    def __init__(
        self,
        dsn: str,
        jwt_secret: str,
        *,
        schema: str = "public",
        anon_role: str = "anon",
        host: str = "127.0.0.1",
        port: int = 0,
        pool_size: int = 10,
        pool_timeout: float = 5.0,
    ) -> None:
        self.dsn = dsn
        self.jwt_secret = jwt_secret
        self.schema = schema
        self.anon_role = anon_role
        self.counts: Counter[str] = Counter()
        self.fault: str | None = None
        self._counts_lock = threading.Lock()
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
        self._role_settings: dict[str, list[tuple[str, str]]] = {}

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
        self._role_settings = self._load_role_settings()
        self._thread = threading.Thread(target=self._server.serve_forever, name="rpc-gateway", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._pool.close()

    def __enter__(self) -> RpcGateway:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    # -- request handling ---------------------------------------------------

    def count(self, function: str) -> None:
        with self._counts_lock:
            self.counts[function] += 1

    def handle_rpc(self, function: str, headers, body: bytes) -> tuple[int, bytes | None]:
        """Run one RPC request; return (status, JSON body or None for 204)."""
        self._check_profile(headers)
        claims = self._claims(headers)
        role = claims.get("role")
        role = self.anon_role if role is None or role == "" else str(role)
        authenticated = role != self.anon_role
        claims = {**claims, "role": role}  # PostgREST adds the resolved role
        args = self._arguments(body)
        try:
            with self._pool.connection() as conn, conn.transaction():
                self._begin(conn, role, claims)
                target = self._find_function(conn, function, set(args))
                return self._call(conn, target, args)
        except psycopg.Error as exc:
            raise self._database_error(exc, authenticated) from exc
        except PoolTimeout as exc:
            raise GatewayError(503, "PGRST000", "Database client error. Retrying the connection.",
                               details=str(exc)) from exc

    def _check_profile(self, headers) -> None:
        # A POST names its schema with Content-Profile; Accept-Profile is for reads.
        profile = headers.get("Content-Profile")
        if profile and profile != self.schema:
            raise GatewayError(406, "PGRST106", f"The schema must be one of the following: {self.schema}")

    def _claims(self, headers) -> dict[str, Any]:
        authorization = headers.get("Authorization")
        apikey = headers.get("apikey")
        if not authorization and not apikey:
            # Supabase's API gateway answers this before PostgREST is reached.
            raise GatewayError(401, None, "No API key found in request",
                               hint="No `apikey` request header or url param was found.")
        if authorization:
            scheme, _, token = authorization.partition(" ")
            if scheme.lower() != "bearer":
                return {}  # PostgREST ignores other schemes: the request runs as anon
            token = token.strip()
        else:
            token = apikey
        try:
            claims = jwt.decode(token, self.jwt_secret, algorithms=["HS256"], leeway=JWT_LEEWAY_SECONDS,
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

    def _begin(self, conn: psycopg.Connection, role: str, claims: dict[str, Any]) -> None:
        conn.execute(
            "select set_config('role', %s, true), set_config('request.jwt.claims', %s, true),"
            " set_config('search_path', %s, true)",
            (role, json.dumps(claims), f'"{self.schema}"'),
        )
        for name, value in self._role_settings.get(role, []):
            conn.execute("select set_config(%s, %s, true)", (name, value))

    def _find_function(self, conn: psycopg.Connection, name: str, keys: set[str]) -> Function:
        candidates = [f for f in self._functions(conn, name) if f.accepts(keys)]
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

    def _functions(self, conn: psycopg.Connection, name: str) -> list[Function]:
        rows = conn.execute(
            """
            select p.proname, p.pronargdefaults, p.proretset,
                   p.prorettype = 'pg_catalog.void'::pg_catalog.regtype,
                   coalesce(p.proargnames, '{}'),
                   coalesce(p.proargmodes::text[], '{}'),
                   array(select pg_catalog.format_type(t, null)
                           from unnest(coalesce(p.proallargtypes, p.proargtypes::oid[]))
                                with ordinality as u(t, i) order by i)
              from pg_catalog.pg_proc p
              join pg_catalog.pg_namespace n on n.oid = p.pronamespace
             where n.nspname = %s and p.proname = %s and p.prokind = 'f'
            """,
            (self.schema, name),
        ).fetchall()
        functions = []
        for proname, n_defaults, returns_set, returns_void, names, modes, types in rows:
            inputs = []
            for i, type_name in enumerate(types):
                mode = modes[i] if modes else "i"
                if mode in ("i", "b", "v"):
                    inputs.append((names[i] if i < len(names) else "", type_name))
            if any(not arg_name for arg_name, _ in inputs):
                continue  # unnamed parameters: not callable by name
            functions.append(Function(self.schema, proname, tuple(inputs), n_defaults, returns_set, returns_void))
        return functions

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
                raise ValueError("message is not an object")
        except (ValueError, KeyError, TypeError, AttributeError):
            return GatewayError(500, "PGRST121", "Could not parse JSON in the RAISE SQLSTATE 'PGRST' error",
                                details=f"message: {message}; detail: {detail}")
        error = GatewayError(status, None, "", headers=headers)
        error.body = {key: body.get(key) for key in ("code", "message", "details", "hint")}
        return error

    def _load_role_settings(self) -> dict[str, list[tuple[str, str]]]:
        with self._pool.connection() as conn:
            rows = conn.execute(
                """
                select r.rolname, s.setconfig
                  from pg_catalog.pg_db_role_setting s
                  join pg_catalog.pg_roles r on r.oid = s.setrole
                 where s.setdatabase in (0, (select oid from pg_catalog.pg_database
                                             where datname = current_database()))
                """
            ).fetchall()
        settings: dict[str, list[tuple[str, str]]] = {}
        for role, config in rows:
            for item in config:
                name, _, value = item.partition("=")
                settings.setdefault(role, []).append((name, value))
        return settings


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

    def do_POST(self) -> None:  # noqa: N802 (http.server's naming)
        gateway: RpcGateway = self.server.gateway  # type: ignore[attr-defined]
        body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        function = next((self.path[len(p):].split("?")[0] for p in RPC_PREFIXES if self.path.startswith(p)), None)
        gateway.count(function or self.path)
        if gateway.fault and self._misbehave(gateway):
            return
        try:
            if not function:
                raise GatewayError(404, "PGRST125", f"Invalid path specified in request URL: {self.path} (this gateway serves RPC only)")
            status, payload = gateway.handle_rpc(function, self.headers, body)
        except GatewayError as exc:
            self._send(exc.status, json.dumps(exc.body).encode(), exc.headers)
        except Exception as exc:  # a gateway bug must still answer, not hang the client
            self._send(500, json.dumps({"code": "PGRST000", "message": f"gateway error: {exc}",
                                        "details": None, "hint": None}).encode(), {})
        else:
            self._send(status, payload, {})

    def _misbehave(self, gateway: RpcGateway) -> bool:
        fault = gateway.fault
        if fault == "503":
            self._send(503, json.dumps({"code": "PGRST001", "message": "Database client error. Retrying the connection.",
                                        "details": "injected fault", "hint": None}).encode(),
                       {"Proxy-Status": "PostgREST; error=PGRST001"})
            return True
        if fault == "hang":
            deadline = time.monotonic() + 60
            while gateway.fault == "hang" and time.monotonic() < deadline:
                time.sleep(0.05)
        if fault in ("hang", "close"):
            self.close_connection = True
            self.request.shutdown(socket.SHUT_RDWR)
            return True
        return False

    def do_GET(self) -> None:  # noqa: N802
        self.rfile.read(int(self.headers.get("Content-Length") or 0))
        gateway: RpcGateway = self.server.gateway  # type: ignore[attr-defined]
        if self.path == COUNTS_PATH:  # for benchmarks running the gateway as a separate process
            with gateway._counts_lock:
                self._send(200, json.dumps(dict(gateway.counts)).encode(), {})
            return
        gateway.count(self.path)
        self._send(405, json.dumps({"code": None, "message": "this gateway implements POST /rpc/{fn} only",
                                    "details": None, "hint": None}).encode(), {})

    def _send(self, status: int, payload: bytes | None, headers: dict[str, str]) -> None:
        self.send_response(status)
        for name, value in headers.items():
            self.send_header(name, value)
        if payload is None:
            self.send_header("Content-Length", "0")
            self.end_headers()
            return
        self.send_header("Content-Type", "application/json; charset=utf-8")
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload)

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002
        pass  # tests read counts, not access logs


def main() -> None:
    parser = argparse.ArgumentParser(description="PostgREST-compatible RPC gateway for local testing")
    parser.add_argument("--dsn", required=True, help="connection string of the authenticator role")
    parser.add_argument("--jwt-secret", required=True)
    parser.add_argument("--port", type=int, default=54321)
    args = parser.parse_args()
    gateway = RpcGateway(args.dsn, args.jwt_secret, port=args.port).start()
    print(f"RPC gateway on {gateway.url}/rest/v1/rpc/ -- Ctrl-C to stop", flush=True)
    try:
        threading.Event().wait()
    except KeyboardInterrupt:
        gateway.stop()


if __name__ == "__main__":
    main()
