"""A call of one SQL function on a pooled connection, sent through libpq itself.

Every call of the library is one statement, ``select public.fn(p_a => $1,
...)``, with a few parameters and one value back. psycopg's cursor serves any
statement: it converts the query, counts a statement's uses before preparing
it and builds a result set, about 7 µs of Python per call on 2 cores, as much
as the rest of the library's work on a get (docs/performance.md).
:class:`ConnectionCalls` does only what these calls need, through the libpq
wrapper psycopg documents for low-level work (``Connection.pgconn``): it
prepares each statement once per connection, sends it, waits on the socket
and reads the one value. The connection stays psycopg's: the pool opens,
checks, resets and discards it as before.

Parameters get the types psycopg would give them (a str is "unknown", an int
the smallest integer type that holds it, a dict jsonb), so the server picks
the same function.
"""

from __future__ import annotations

import itertools
import json
import re
import select
from collections.abc import Callable
from functools import lru_cache
from typing import Any

import psycopg
from psycopg import pq

_TEXT, _VARCHAR, _JSON, _JSONB = 25, 1043, 114, 3802
_BOOL, _INT2, _INT4, _INT8, _NUMERIC = 16, 21, 23, 20, 1700
#: Errors that say the prepared statement is gone or stale, raised before it ran:
#: a DEALLOCATE or DISCARD on the connection (26000), a function recreated
#: with another return type by a migration (0A000, "cached plan must not
#: change result type").
_PREPARE_AGAIN = {"26000", "0A000"}
_NAME = re.compile(r"[a-z_][a-z0-9_]*")


class FunctionError(Exception):
    """The server's error answer to a call."""

    def __init__(self, sqlstate: str, message: str) -> None:
        super().__init__(f"{message} (SQLSTATE {sqlstate})")
        self.sqlstate = sqlstate
        self.message = message


@lru_cache(maxsize=64)
def statement(function: str, names: tuple[str, ...]) -> bytes:
    """``select public.fn(p_a => $1, ...)``, rendered once per function and argument set.

    The names come from this package's own calls; one that would need
    quoting is refused rather than quoted.
    """
    for name in (function, *names):
        if not _NAME.fullmatch(name):
            raise ValueError(f"not a plain SQL name: {name!r}")
    arguments = ", ".join(f"{name} => ${n}" for n, name in enumerate(names, 1))
    return f"select public.{function}({arguments})".encode()


def _int_type(number: int) -> int:
    if -(2**15) <= number < 2**15:
        return _INT2
    if -(2**31) <= number < 2**31:
        return _INT4
    if -(2**63) <= number < 2**63:
        return _INT8
    return _NUMERIC


def parameters(values: list[Any], encoding: str) -> tuple[tuple[int, ...], list[bytes | None]]:
    """The values' types (psycopg's choice) and their text, for libpq."""
    types: list[int] = []
    params: list[bytes | None] = []
    for value in values:
        if value is None:
            types.append(0)
            params.append(None)
        elif isinstance(value, str):
            types.append(0)  # "unknown": the function's parameter decides, as with psycopg
            params.append(value.encode(encoding))
        elif isinstance(value, bool):
            types.append(_BOOL)
            params.append(b"t" if value else b"f")
        elif isinstance(value, int):
            types.append(_int_type(value))
            params.append(str(value).encode())
        elif isinstance(value, dict):
            types.append(_JSONB)
            params.append(json.dumps(value).encode())  # psycopg's Jsonb: an int beyond 64 bits stays exact
        else:
            raise TypeError(f"no SQL parameter for {type(value).__name__}")
    return tuple(types), params


class ConnectionCalls:
    """The calls made on one connection: its prepared statements, its socket and its answers' readers."""

    def __init__(self, conn: psycopg.Connection, read_json: Callable[[bytes], Any]) -> None:
        self._conn = conn
        self._pgconn = conn.pgconn
        self._encoding = conn.info.encoding
        self._read_json = read_json
        # psycopg's connection says whether it may prepare: not behind a
        # transaction pooler, where the next statement may reach another server.
        # Preparing pays only in one round trip with the first run, which takes a pipeline.
        self._prepares = conn.prepare_threshold is not None and psycopg.Pipeline.is_supported()
        self._prepared: dict[tuple[bytes, tuple[int, ...]], bytes] = {}
        self._names = (f"conversation_storage_{n}".encode() for n in itertools.count())
        self._loaders: dict[int, Callable[[bytes], Any]] = {}
        self._readable = select.poll()
        self._readable.register(self._pgconn.socket, select.POLLIN)

    def closed_by_server(self) -> bool:
        """True when the server has closed (or written to) the idle connection.

        An idle autocommit connection receives nothing, so anything to read
        is the end of it: a restarted server, an idle timeout, a pooler that
        hung up. One poll() costs far less than a round trip to check.
        """
        return self._conn.closed or bool(self._readable.poll(0))

    def call(self, sql: bytes, values: list[Any]) -> Any:
        """Run ``sql`` with ``values``; its one value, or None. Raises FunctionError for the server's errors."""
        types, params = parameters(values, self._encoding)
        try:
            result = self._execute(sql, types, params)
        except FunctionError as error:
            if error.sqlstate not in _PREPARE_AGAIN:
                raise
            self._prepared.clear()  # the server's set is unknown now: prepare each again
            result = self._execute(sql, types, params)
        if result.ntuples == 0:
            return None
        data = result.get_value(0, 0)
        return None if data is None else self._loader(result.ftype(0))(data)

    def _execute(self, sql: bytes, types: tuple[int, ...], params: list[bytes | None]) -> pq.abc.PGresult:
        pgconn = self._pgconn
        if not self._prepares:
            pgconn.send_query_params(sql, params, param_types=types)
            return self._only_result()
        name = self._prepared.get((sql, types))
        if name is not None:
            pgconn.send_query_prepared(name, params)
            return self._only_result()
        return self._prepare_and_run(sql, types, params)

    def _prepare_and_run(self, sql: bytes, types: tuple[int, ...], params: list[bytes | None]) -> pq.abc.PGresult:
        """A statement's first use on the connection: prepared and run in one round trip (a pipeline).

        Sent together, the call reaches the server as an unprepared one
        would, whatever becomes of the link after: a write abandoned at its
        deadline still arrives, and its function refuses it there.
        """
        pgconn = self._pgconn
        name = next(self._names)
        pgconn.enter_pipeline_mode()
        try:
            pgconn.send_prepare(name, sql, param_types=types)
            pgconn.send_query_prepared(name, params)
            pgconn.pipeline_sync()
            results = self._results_until_sync()
        finally:
            self._leave_pipeline()
        if len(results) != 2:
            raise psycopg.OperationalError(f"expected 2 results of a prepare and run, got {len(results)}")
        prepared, ran = results
        if prepared.status == pq.ExecStatus.FATAL_ERROR:
            raise _error(prepared, pgconn)
        self._prepared[(sql, types)] = name
        return _checked(ran, pgconn)

    def _leave_pipeline(self) -> None:
        try:
            self._pgconn.exit_pipeline_mode()
        except psycopg.Error:
            # Results left unread (the call was interrupted): the
            # connection's state is unknown, so the pool must drop it.
            self._conn.close()

    def _results_until_sync(self) -> list[pq.abc.PGresult]:
        results: list[pq.abc.PGresult] = []
        while True:
            result = self._next_result()
            if result is None:
                continue  # the end of one statement's results
            if result.status == pq.ExecStatus.PIPELINE_SYNC:
                return results
            results.append(result)

    def _only_result(self) -> pq.abc.PGresult:
        """The statement's result, once the server has sent all of it."""
        last: pq.abc.PGresult | None = None
        while (result := self._next_result()) is not None:
            if last is None or last.status != pq.ExecStatus.FATAL_ERROR:
                last = result  # the first error wins: what follows it is libpq's cleanup
        if last is None:
            raise psycopg.OperationalError(f"no answer: {self._pgconn.get_error_message()}")
        return _checked(last, self._pgconn)

    def _next_result(self) -> pq.abc.PGresult | None:
        pgconn = self._pgconn
        while pgconn.flush():  # the rest of a large parameter, as the socket takes it
            self._wait(select.POLLIN | select.POLLOUT)
            pgconn.consume_input()
        pgconn.consume_input()
        while pgconn.is_busy():
            self._wait(select.POLLIN)
            pgconn.consume_input()
        return pgconn.get_result()

    def _wait(self, events: int) -> None:
        if events == select.POLLIN:
            self._readable.poll()
            return
        poller = select.poll()
        poller.register(self._pgconn.socket, events)
        poller.poll()

    def _loader(self, oid: int) -> Callable[[bytes], Any]:
        load = self._loaders.get(oid)
        if load is None:
            if oid in (_TEXT, _VARCHAR):
                encoding = self._encoding
                load = self._loaders[oid] = lambda data: bytes(data).decode(encoding)
            elif oid in (_JSON, _JSONB):
                read_json = self._read_json
                load = self._loaders[oid] = lambda data: read_json(bytes(data))
            else:
                loader = self._conn.adapters.get_loader(oid, pq.Format.TEXT)
                if loader is None:
                    raise psycopg.InterfaceError(f"no loader for the type with OID {oid}")
                load = self._loaders[oid] = loader(oid, self._conn).load
        return load


def _checked(result: pq.abc.PGresult, pgconn: pq.abc.PGconn) -> pq.abc.PGresult:
    if result.status == pq.ExecStatus.FATAL_ERROR:
        raise _error(result, pgconn)
    return result


def _error(result: pq.abc.PGresult, pgconn: pq.abc.PGconn) -> Exception:
    """A FunctionError for the server's error; psycopg's OperationalError for libpq's own (a lost connection)."""
    sqlstate = result.error_field(pq.DiagnosticField.SQLSTATE)
    message = result.error_field(pq.DiagnosticField.MESSAGE_PRIMARY) or result.error_message
    text = bytes(message).decode("utf-8", "replace").strip()
    if sqlstate is None:
        return psycopg.OperationalError(text or pgconn.get_error_message())
    return FunctionError(bytes(sqlstate).decode(), text)
