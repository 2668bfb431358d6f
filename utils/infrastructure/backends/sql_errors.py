"""One mapping from Postgres / PostgREST error codes to the library's errors.

Used by every transport that reaches the SQL functions (Supabase's HTTP API,
psycopg), so the same failure raises the same error type whichever way it
arrived, and the message says how to fix it.
"""

from __future__ import annotations

from ..contract.errors import (
    StorageError,
    StoragePermissionError,
    StorageSchemaError,
    StorageUnavailableError,
    StorageValueError,
)
from ..remote.schema import SCHEMA_VERSION

_PERMISSION_CODES = {"42501", "401", "403", "PGRST300", "PGRST301", "PGRST302", "PGRST303"}
_SCHEMA_CODES = {"PGRST202", "PGRST203", "PGRST205", "42883", "42P01", "404"}
#: No such function (PostgREST's schema cache, or Postgres itself): see schema_fallbacks.py.
_MISSING_FUNCTION_CODES = {"PGRST202", "42883"}
# PGRST000/001: no database connection; PGRST002: schema cache not loaded;
# PGRST003: PostgREST's pool had no free connection in time (504).
_UNAVAILABLE_CODES = {"502", "503", "504", "520", "PGRST000", "PGRST001", "PGRST002", "PGRST003"}
#: HTTP statuses that mean "try again later" whoever answered them.
_TRANSIENT_STATUSES = {408, 429}
#: Answers saying the request was not run and will not be: no database
#: connection or a full pool (PostgREST), too many connections, a statement
#: cancelled (a timeout, or a write refused after its deadline).
_NOT_RUN_CODES = {"PGRST000", "PGRST001", "PGRST002", "PGRST003", "503"}
_NOT_RUN_STATUSES = {408, 429, 503}


def error_for_code(code: str | None, message: str | None, *, operation: str, where: str) -> StorageError:
    """The library error for a failed ``operation`` (a SQL function) at ``where``."""
    code = str(code or "")
    detail = f"{message or 'error'} (code {code or 'none'})"
    if code in _PERMISSION_CODES or code.startswith("28") or (not code and "api key" in detail.lower()):
        return StoragePermissionError(
            f"{where} refused {operation}: {detail}. Use the service-role key (secret key, "
            "sb_secret_...) for Supabase, or the table owner's connection for Postgres: the "
            "anon/publishable key and user tokens cannot reach conversation_threads."
        )
    if code in _SCHEMA_CODES:
        error = StorageSchemaError(
            f"{where} has no usable {operation}(): {detail}. Create the schema (version {SCHEMA_VERSION}): "
            "run `conversation-storage migrate` with DATABASE_URL set to the database's connection string "
            "(Supabase: Settings > Database). Without one, on Supabase, paste the output of "
            "`conversation-storage sql` into the SQL editor, then reload PostgREST's schema cache "
            "(NOTIFY pgrst, 'reload schema')."
        )
        error.missing_function = code in _MISSING_FUNCTION_CODES
        error.detail = detail
        return error
    if code.startswith(("08", "53", "57")) or code in _UNAVAILABLE_CODES:
        unavailable = StorageUnavailableError(f"{where} could not run {operation}: {detail}")
        unavailable.may_run_later = not (code in _NOT_RUN_CODES or code.startswith(("53", "57")))
        return unavailable
    if code.startswith("22"):
        return StorageValueError(f"{where} rejected the arguments of {operation}: {detail}")
    return StorageError(f"{where} failed to run {operation}: {detail}")


def error_for_status(status: int, message: str, *, operation: str, where: str) -> StorageError:
    """The library error for an HTTP error that PostgREST did not answer (no error code).

    Such answers come from what stands in front of it (Supabase's API gateway,
    a CDN, a proxy): only the status tells what happened.
    """
    detail = f"HTTP {status} from {where}'s gateway, not from its database API: {message}"
    if status >= 500 or status in _TRANSIENT_STATUSES:
        error = StorageUnavailableError(f"{where} could not run {operation}: {detail}")
        error.may_run_later = status not in _NOT_RUN_STATUSES
        return error
    if status in (401, 403):
        return StoragePermissionError(
            f"{where} refused {operation}: {detail}. SUPABASE_KEY must be one of the project's "
            "API keys, the secret key (sb_secret_...) or the legacy service_role key."
        )
    return StorageError(f"{where} failed to run {operation}: {detail}; is SUPABASE_URL the project's URL?")
