"""Running on a schema older than this library's, and on a stale schema cache.

A daemon may get a new library before anyone runs ``conversation-storage
migrate``, and a function ``migrate`` just created stays invisible to a
PostgREST that has not reloaded its schema cache (PGRST202). Neither is a
reason to stop persisting. Every operation has a function from schema
version 7 (the pre-release sql/010) or earlier; only the near cache needs newer ones:

- ``thread_fetch`` -> ``thread_get``, ``thread_patch`` -> a whole write, and
  ``thread_put`` -> ``thread_set`` (``thread_set_before`` with a deadline);
- below schema version 10 versions do not follow outside edits and restores
  (the pre-release sql/015), so a near cache could answer a document the store no longer holds.

Either way the near cache is switched off for the rest of the process, with
one WARNING that says what to run.
"""

from __future__ import annotations

import logging
from typing import Any, NamedTuple

from ..contract.errors import StorageSchemaError
from .function_calls import Call

logger = logging.getLogger("conversation_storage")

#: Versions that change with every change of the document, whoever made it (schema version 10).
NEAR_CACHE_SCHEMA_VERSION = 10


class Instead(NamedTuple):
    """What to do when a function is missing: another call, or this answer without a call."""

    call: Call | None
    answer: Any = None


def instead_of(call: Call, error: StorageSchemaError) -> Instead:
    """The older way to do ``call``; re-raises ``error`` when there is none."""
    if not error.missing_function:
        raise error
    if call.function == "thread_fetch":
        return Instead(Call("thread_get", {"p_thread_id": call.params["p_thread_id"]}, _as_fetched))
    if call.function == "thread_patch":
        return Instead(None, None)  # "not applied": the caller writes the whole document
    if call.function == "thread_put":
        params = dict(call.params)
        deadline = params.pop("p_deadline", None)
        if deadline is None:
            return Instead(Call("thread_set", params, _as_put))
        return Instead(Call("thread_set_before", {"p_deadline": deadline, **params}, _as_put))
    raise error


def _as_fetched(text: str | None) -> dict | None:
    # Version 0 is no version: nothing read this way is ever confirmed from the cache.
    return None if text is None else {"version": 0, "data": text}


def _as_put(expires_at: Any) -> dict:
    return {"version": 0, "expires_at": expires_at}


def near_cache_unsupported(report: dict[str, Any]) -> str | None:
    """Why the installed schema (a storage_health() report) cannot serve a near cache, if so."""
    installed = report.get("schema_version")
    if isinstance(installed, int) and installed < NEAR_CACHE_SCHEMA_VERSION:
        return f"the database has storage schema version {installed}, the near cache needs {NEAR_CACHE_SCHEMA_VERSION}"
    return None


def warn_near_cache_off(where: str, reason: str) -> None:
    logger.warning(
        "%s: %s; threads are still stored, with the near cache off (every read and write carries "
        "the whole thread). Run `conversation-storage migrate`, on Supabase let PostgREST reload "
        "its schema cache (NOTIFY pgrst, 'reload schema'), then restart the daemon.", where, reason)
