"""A Supabase API whose only database connection a test keeps busy: PostgREST's pool timeout on demand.

The gateway in front of a project gets a pool of one connection; a request
that waits on a row lock the test holds keeps it, so the next request waits
for a connection and, past ``pool_timeout``, is answered 504 PGRST003.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager

import psycopg

from .rpc_gateway import RpcGateway
from .supabase_edge import JWT_SECRET
from .waiting import wait_until


def one_connection_api(project, pool_timeout: float) -> RpcGateway:
    """A gateway (not started: use it with ``with``) to ``project``'s database with a pool of one connection."""
    return RpcGateway(project.gateway.dsn, JWT_SECRET, keys=project.keys, pool_size=1, pool_timeout=pool_timeout)


@contextmanager
def connection_held_on_a_row_lock(project, key: str, call: Callable[[], object],
                                  join_timeout: float = 30) -> Iterator[psycopg.Connection]:
    """Lock thread ``key``'s row and run ``call`` (a request that writes it) in a thread of its own.

    Yields, in the locking transaction, once that request waits on the lock,
    holding the API's only connection; on leaving, releases the lock and
    waits for the request to finish.
    """
    with project.connect() as locker:
        with locker.transaction():
            locker.execute("select 1 from public.conversation_threads where thread_id = %s for update", (key,))
            waiter = threading.Thread(target=call)
            waiter.start()
            # pg_locks, not pg_stat_activity: a transaction reads the latter once and keeps that copy.
            wait_until(lambda: locker.execute("select count(*) from pg_locks where not granted"
                                              " and pid <> pg_backend_pid()").fetchone()[0],
                       "the API's only connection to wait on the row lock")
            yield locker
        waiter.join(join_timeout)
