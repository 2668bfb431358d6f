"""The storage operations as calls of the SQL functions in ``sql/``.

Each operation is one function call; the Supabase and Postgres transports,
sync and async, only carry a :class:`Call` and hand back its raw result.
Documents go through :mod:`.json_envelope` here, on every path that writes
(set, update, replay) or returns them (get, update's read), so both
transports, both faces and the failover replay store a NUL the same way.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, NamedTuple

from ..contract.base_storage import USER_ERASE_BATCH
from ..contract.errors import StorageSchemaError
from ..contract.json_envelope import from_stored, to_stored
from ..contract.thread_info import ThreadInfo
from .schema import check_health

if TYPE_CHECKING:
    # Only named: the failover layer hands its spooled writes to replay().
    from ..failover.spool import SpooledWrite


class Call(NamedTuple):
    function: str
    params: dict[str, Any]
    decode: Callable[[Any], Any]


def _document_or_none(value: Any) -> str | None:
    if value is not None and not isinstance(value, str):
        raise StorageSchemaError(
            f"thread_get returned {type(value).__name__}, not JSON text: "
            "the database has an unexpected thread_get(); apply the files of sql/ again"
        )
    return from_stored(value)


def set_call(key: str, ttl_seconds: int, value: str, user_id: str | None, metadata: dict | None,
             deadline: float | None = None) -> Call:
    """thread_put: thread_set answering {"version", "expires_at"}, with an optional deadline.

    Every set goes through it, with the near cache or without: thread_set's
    version + 1 costs a trigger call (the version trigger), thread_put draws the version itself.
    """
    params = {"p_thread_id": key, "p_data": to_stored(value), "p_ttl_seconds": ttl_seconds}
    return Call("thread_put", _with_optional(params, user_id, metadata, deadline), _unchanged)


def _with_optional(params: dict[str, Any], user_id: str | None, metadata: dict | None,
                   deadline: float | None) -> dict[str, Any]:
    """``params`` with the write's optional arguments that are given (the functions default the rest)."""
    if user_id is not None:
        params["p_user_id"] = user_id
    if metadata is not None:
        params["p_metadata"] = metadata
    if deadline is not None:
        params["p_deadline"] = _timestamp(deadline)
    return params


def get_call(key: str) -> Call:
    return Call("thread_get", {"p_thread_id": key}, _document_or_none)


def delete_call(key: str, deadline: float | None = None) -> Call:
    return _before(deadline, Call("thread_delete", {"p_thread_id": key}, bool))


def _before(deadline: float | None, call: Call) -> Call:
    """``call`` refused by the server if it starts after ``deadline`` (the SQL *_before functions)."""
    if deadline is None:
        return call
    return Call(f"{call.function}_before", {"p_deadline": _timestamp(deadline), **call.params}, call.decode)


def patch_call(key: str, base_version: int, patch: str, size_bytes: int, ttl_seconds: int,
               user_id: str | None, metadata: dict | None, deadline: float | None = None) -> Call:
    params = {"p_thread_id": key, "p_base_version": base_version, "p_patch": patch,
              "p_size_bytes": size_bytes, "p_ttl_seconds": ttl_seconds}
    return Call("thread_patch", _with_optional(params, user_id, metadata, deadline), _unchanged)


def cleanup_call(batch_size: int) -> Call:
    return Call("cleanup_expired_threads", {"p_batch_size": batch_size}, int)


def list_call(user_id: str | None, limit: int) -> Call:
    params: dict[str, Any] = {"p_limit": limit}
    if user_id is not None:
        params["p_user_id"] = user_id
    return Call("thread_list", params, lambda items: [ThreadInfo.from_json(i) for i in items])


def touch_call(key: str, ttl_seconds: int) -> Call:
    return Call("thread_touch", {"p_thread_id": key, "p_ttl_seconds": ttl_seconds}, bool)


def delete_user_batch_call(user_id: str) -> Call:
    return Call("delete_user_threads_batch", {"p_user_id": user_id, "p_batch_size": USER_ERASE_BATCH}, int)


class UserErase:
    """delete_user_threads as calls of one batch each, each its own transaction, until one comes back short.

    A user with millions of threads is erased in many bounded calls. The
    caller sends :attr:`call` and hands each answer to :meth:`count` until
    :attr:`done`; :attr:`total` is then how many threads went.
    """

    def __init__(self, user_id: str) -> None:
        self.call = delete_user_batch_call(user_id)
        self.total = 0
        self.done = False

    def count(self, deleted: int) -> None:
        self.total += deleted
        self.done = deleted < USER_ERASE_BATCH


def get_versioned_call(key: str) -> Call:
    return Call("thread_get_versioned", {"p_thread_id": key},
                lambda r: (_document_or_none(r["data"]), int(r["version"])))


def set_if_version_call(key, ttl_seconds, value, user_id, metadata, expected_version: int,
                        deadline: float | None = None) -> Call:
    params = set_call(key, ttl_seconds, value, user_id, metadata).params
    params["p_expected_version"] = expected_version
    return _before(deadline, Call("thread_set_if_version", params, lambda version: version is not None))


def replay_call(write: SpooledWrite) -> Call:
    if write.op == "set":
        assert write.ttl is not None and write.value is not None, "the spool keeps both with every set"
        params = set_call(write.key, write.ttl, write.value, write.user_id, write.metadata).params
    else:
        params = {"p_thread_id": write.key}
    return Call("thread_replay", {**params, "p_op": write.op, "p_written_at": _timestamp(write.written_at)}, str)


def _timestamp(unix_time: float) -> str:
    return datetime.fromtimestamp(unix_time, tz=UTC).isoformat()


def _unchanged(value: Any) -> Any:
    return value


def unix_time(value: Any) -> float:
    """A timestamptz as psycopg (datetime) or PostgREST (ISO text) hands it back."""
    if isinstance(value, str):
        value = datetime.fromisoformat(value)
    return value.timestamp()


STATS_CALL = Call("thread_stats", {}, lambda report: {k: int(v) for k, v in report.items()})
HEALTH_CALL = Call("storage_health", {}, check_health)
