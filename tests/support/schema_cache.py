"""PostgREST's schema cache, for the RPC gateway (:mod:`tests.support.rpc_gateway`).

As in PostgREST (AppState/Reload.hs, SchemaCache.hs): the exposed schema's
functions are read once at start and served from memory; a function created
later is unknown (404 ``PGRST202``) and a dropped one still looks present
(the call then fails in Postgres, 42883) until a notification arrives on the
channel ``pgrst`` with the payload ``reload schema`` or an empty one.

The settings of the roles requests switch to are read likewise (Config/Database.hs,
queryRoleSettings): at start and on the payload ``reload config``; those of
the roles the login is a member of, database-independent ones only
(``pg_roles.rolconfig``), and of those only the ones the login may set
itself: ``user`` context or, from Postgres 15, granted with ``GRANT SET``.
A ``default_transaction_isolation`` among them is the role's isolation level,
and one among a function's own settings (``proconfig``) overrides it.
Other payloads are ignored.
A LISTEN connection of the gateway's own login receives them; when it is
lost, it is opened again with a growing delay, and the cache is read again
once it is back, since notifications sent meanwhile are lost.

One difference, for determinism: PostgREST reloads in the background, so on
a real project a request sent right after the NOTIFY (or after DDL, where
Supabase's event trigger sends it) may still see the old cache for a
moment. Here each request first calls :meth:`SchemaCache.catch_up`, one
round trip on the LISTEN connection: Postgres delivers every notification
committed before it ahead of the answer, and a reload they ask for finishes
before the request goes on. A test therefore never waits for a reload, and
:attr:`SchemaCache.loads` counts the loads so far.
"""

from __future__ import annotations

import select
import socket
import threading
from dataclasses import dataclass

import psycopg

CHANNEL = "pgrst"
RELOAD_PAYLOADS = ("", "reload schema")
RELOAD_CONFIG = "reload config"
ISOLATION_SETTING = "default_transaction_isolation"
FIRST_RETRY_SECONDS = 0.1  # PostgREST starts at 1 s; tests restart servers and want it back soon
MAX_RETRY_SECONDS = 4.0

FUNCTIONS_SQL = """
select p.proname, p.pronargdefaults, p.proretset,
       p.prorettype = 'pg_catalog.void'::pg_catalog.regtype,
       p.provolatile::text,
       coalesce(p.proargnames, '{}'),
       coalesce(p.proargmodes::text[], '{}'),
       array(select pg_catalog.format_type(t, null)
               from unnest(coalesce(p.proallargtypes, p.proargtypes::oid[])) with ordinality as u(t, i)
              order by i),
       (select pg_catalog.split_part(c, '=', 2) from unnest(p.proconfig) as c
         where pg_catalog.split_part(c, '=', 1) = 'default_transaction_isolation' limit 1)
  from pg_catalog.pg_proc p
  join pg_catalog.pg_namespace n on n.oid = p.pronamespace
 where n.nspname = %s and p.prokind = 'f'
   and p.prorettype <> 'pg_catalog.trigger'::pg_catalog.regtype
"""

# A setting needs no privilege to be set by the login itself when it is of
# user context; others only with GRANT SET (Postgres 15+). A superuser-only
# one would fail the request with "permission denied to set parameter".
ROLE_SETTINGS_SQL = """
select r.rolname, pg_catalog.split_part(c.setting, '=', 1),
       pg_catalog.substr(c.setting, pg_catalog.strpos(c.setting, '=') + 1)
  from pg_catalog.pg_auth_members m
  join pg_catalog.pg_roles r on r.oid = m.roleid
 cross join lateral unnest(r.rolconfig) as c(setting)
  join pg_catalog.pg_settings s on s.name = pg_catalog.split_part(c.setting, '=', 1)
 where m.member = (select oid from pg_catalog.pg_roles where rolname = current_user)
   and (s.context = 'user' {granted})
"""
GRANTED_SET = "or pg_catalog.has_parameter_privilege(current_user, s.name, 'SET')"


@dataclass(frozen=True)
class Function:
    schema: str
    name: str
    inputs: tuple[tuple[str, str], ...]  # (parameter name, declared type), in order
    n_defaults: int
    returns_set: bool
    returns_void: bool
    volatility: str  # pg_proc.provolatile: i(mmutable), s(table), v(olatile)
    isolation: str | None = None  # its own default_transaction_isolation, e.g. "serializable"

    @property
    def required(self) -> set[str]:
        return {name for name, _ in self.inputs[: len(self.inputs) - self.n_defaults]}

    @property
    def all_names(self) -> set[str]:
        return {name for name, _ in self.inputs}

    @property
    def read_only(self) -> bool:
        return self.volatility in ("i", "s")

    def accepts(self, keys: set[str]) -> bool:
        return self.required <= keys <= self.all_names


def read_functions(conn: psycopg.Connection, schema: str) -> dict[str, tuple[Function, ...]]:
    """The functions of ``schema`` callable by named arguments, by name."""
    found: dict[str, list[Function]] = {}
    for name, n_defaults, returns_set, returns_void, volatility, names, modes, types, isolation in conn.execute(
        FUNCTIONS_SQL, (schema,)
    ):
        inputs = []
        for i, type_name in enumerate(types):
            if (modes[i] if modes else "i") in ("i", "b", "v"):
                inputs.append((names[i] if i < len(names) else "", type_name))
        if any(not arg_name for arg_name, _ in inputs):
            continue  # an unnamed parameter cannot be given by name
        found.setdefault(name, []).append(
            Function(schema, name, tuple(inputs), n_defaults, returns_set, returns_void, volatility, isolation)
        )
    return {name: tuple(functions) for name, functions in found.items()}


def read_role_settings(conn: psycopg.Connection) -> tuple[dict[str, tuple[tuple[str, str], ...]], dict[str, str]]:
    """(settings by role, isolation level by role) for the roles the login may switch to."""
    granted = GRANTED_SET if conn.info.server_version >= 150000 else ""
    settings: dict[str, list[tuple[str, str]]] = {}
    isolation: dict[str, str] = {}
    for role, name, value in conn.execute(ROLE_SETTINGS_SQL.format(granted=granted)):
        if name == ISOLATION_SETTING:
            isolation[role] = value
        else:
            settings.setdefault(role, []).append((name, value))
    return {role: tuple(pairs) for role, pairs in settings.items()}, isolation


class SchemaCache:
    """The functions of ``schema`` as last loaded through ``dsn``, reloaded on ``NOTIFY pgrst``."""

    def __init__(self, dsn: str, schema: str, *, wait_timeout: float = 5.0) -> None:
        self.dsn = dsn
        self.schema = schema
        #: How long a request waits for a reload under way before using the cache as it is.
        self.wait_timeout = wait_timeout
        #: Completed loads: the first at :meth:`start`, then one per reload.
        self.loads = 0
        #: Settings applied when switching to each role, and roles' own isolation levels.
        self.role_settings: dict[str, tuple[tuple[str, str], ...]] = {}
        self.role_isolation: dict[str, str] = {}
        self._functions: dict[str, tuple[Function, ...]] = {}
        self._lock = threading.Lock()  # one user of the LISTEN connection at a time
        self._loaded = threading.Condition()
        self._conn: psycopg.Connection | None = None
        self._received: list[str] = []
        self._stopping = threading.Event()
        self._wake, self._wake_signal = socket.socketpair()
        self._thread: threading.Thread | None = None

    def start(self) -> SchemaCache:
        with self._lock:
            self._connect()
            self._load_config(self._conn)
        self._thread = threading.Thread(target=self._listen, name="schema-cache-listener", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stopping.set()
        self._wake_signal.send(b"x")
        if self._thread is not None:
            self._thread.join(10)
        with self._lock:
            self._close()
        self._wake.close()
        self._wake_signal.close()

    def functions(self, name: str) -> tuple[Function, ...]:
        return self._functions.get(name, ())

    @property
    def backend_pid(self) -> int | None:
        """The server process of the LISTEN connection, None while it is down."""
        conn = self._conn
        return None if conn is None or conn.closed else conn.info.backend_pid

    def wait_for_loads(self, count: int, timeout: float) -> bool:
        """Wait until :attr:`loads` reaches ``count`` (a reload the listener does on its own, e.g. after reconnecting)."""
        with self._loaded:
            return self._loaded.wait_for(lambda: self.loads >= count, timeout)

    def catch_up(self) -> bool:
        """Handle every notification committed before this call; False if the LISTEN connection is down."""
        if not self._lock.acquire(timeout=self.wait_timeout):
            return False
        try:
            return self._catch_up_locked()
        finally:
            self._lock.release()

    def _catch_up_locked(self) -> bool:
        conn = self._conn
        if conn is None or conn.closed:
            return False
        try:
            # The server sends pending notifications before it says it is ready for the next query.
            conn.execute("select")
            received, self._received = self._received, []
            if RELOAD_CONFIG in received:
                self._load_config(conn)
            if any(payload in RELOAD_PAYLOADS for payload in received):
                self._load(conn)
        except psycopg.Error:
            return False
        return True

    def _connect(self) -> None:
        conn = psycopg.connect(self.dsn, autocommit=True, connect_timeout=5)
        try:
            conn.add_notify_handler(self._on_notify)
            conn.execute(f"listen {CHANNEL}")
            self._load(conn)
        except BaseException:
            conn.close()
            raise
        self._conn = conn

    def _on_notify(self, notify: psycopg.Notify) -> None:
        if notify.channel == CHANNEL:
            self._received.append(notify.payload)

    def _load(self, conn: psycopg.Connection) -> None:
        functions = read_functions(conn, self.schema)
        with self._loaded:
            self._functions = functions
            self.loads += 1
            self._loaded.notify_all()

    def _load_config(self, conn: psycopg.Connection) -> None:
        self.role_settings, self.role_isolation = read_role_settings(conn)

    def _close(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None

    def _listen(self) -> None:
        delay = FIRST_RETRY_SECONDS
        while not self._stopping.is_set():
            conn = self._conn
            if conn is None or conn.closed:
                if self._reconnect():
                    delay = FIRST_RETRY_SECONDS
                elif self._stopping.wait(delay):
                    return
                else:
                    delay = min(delay * 2, MAX_RETRY_SECONDS)
                continue
            try:
                readable, _, _ = select.select([conn.fileno(), self._wake], [], [])
            except (OSError, ValueError, psycopg.Error):
                readable = [conn]
            if self._wake in readable:
                return
            with self._lock:
                # A request may have read the input first; a failed round trip means the connection is gone.
                if self._conn is conn and not conn.closed and _has_input(conn) and not self._catch_up_locked():
                    self._close()

    def _reconnect(self) -> bool:
        with self._lock:
            self._close()
            try:
                self._connect()
            except psycopg.Error:
                return False
        return True


def _has_input(conn: psycopg.Connection) -> bool:
    try:
        readable, _, _ = select.select([conn.fileno()], [], [], 0)
    except (OSError, ValueError, psycopg.Error):
        return True  # let the round trip find out what is wrong
    return bool(readable)
