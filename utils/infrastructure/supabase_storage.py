"""Threads in Supabase, through the official client's RPC calls only.

Each operation is one ``POST /rest/v1/rpc/<function>``: one HTTP request, one
transaction, judged on the database's clock. The SQL in ``sql/`` defines what
each function does; this module only carries arguments and maps errors.
"""

from __future__ import annotations

import logging
from typing import Any

import httpx
from postgrest.exceptions import APIError
from supabase import ClientOptions, create_client

from .base_storage import ThreadStorage
from .errors import (
    StorageConfigurationError,
    StorageError,
    StoragePermissionError,
    StorageSchemaError,
    StorageUnavailableError,
    StorageValueError,
)
from .schema import SCHEMA_VERSION, check_health

logger = logging.getLogger(__name__)

DEFAULT_TIMEOUT_SECONDS = 10.0


class SupabaseStorage(ThreadStorage):
    """Storage backed by the ``conversation_threads`` table of a Supabase project.

    Needs the service-role (secret) key: the table has RLS on and its
    functions are executable by ``service_role`` only.
    """

    backend_name = "supabase"
    persistent = True

    def __init__(
        self,
        url: str,
        key: str,
        *,
        timeout_seconds: float = DEFAULT_TIMEOUT_SECONDS,
        max_value_bytes: int | None = None,
    ) -> None:
        super().__init__(max_value_bytes=max_value_bytes)
        # The client truncates a float timeout to whole seconds; an httpx
        # client of our own keeps sub-second precision and lets close() free it.
        self._http = httpx.Client(
            timeout=httpx.Timeout(timeout_seconds, connect=min(timeout_seconds, 5.0)),
            follow_redirects=True,
        )
        try:
            self._client = create_client(url, key, options=ClientOptions(httpx_client=self._http))
        except Exception as exc:
            self._http.close()
            raise StorageConfigurationError(
                f"SUPABASE_URL={url!r} is not usable by the Supabase client: {exc}"
            ) from None
        self.url = url

    def health(self) -> dict[str, Any]:
        """Check reachability, key role and schema version; return the server's report."""
        self._ensure_open()
        return check_health(self._rpc("storage_health", {}))

    def _set(self, key, ttl_seconds, value, user_id, metadata) -> None:
        params: dict[str, Any] = {"p_thread_id": key, "p_data": value, "p_ttl_seconds": ttl_seconds}
        if user_id is not None:
            params["p_user_id"] = user_id
        if metadata is not None:
            params["p_metadata"] = metadata
        self._rpc("thread_set", params)

    def _get(self, key: str) -> str | None:
        value = self._rpc("thread_get", {"p_thread_id": key})
        if value is not None and not isinstance(value, str):
            raise StorageSchemaError(
                f"thread_get returned {type(value).__name__}, not JSON text: "
                "the database has an unexpected thread_get(); apply the files of sql/ again"
            )
        return value

    def _delete(self, key: str) -> bool:
        return bool(self._rpc("thread_delete", {"p_thread_id": key}))

    def _cleanup_expired(self, batch_size: int) -> int:
        return int(self._rpc("cleanup_expired_threads", {"p_batch_size": batch_size}))

    def _close(self) -> None:
        self._http.close()

    def _rpc(self, function: str, params: dict[str, Any]) -> Any:
        try:
            return self._client.rpc(function, params).execute().data
        except httpx.TimeoutException as exc:
            raise StorageUnavailableError(
                f"Supabase did not answer {function} in time at {self.url}: {type(exc).__name__}"
            ) from exc
        except httpx.HTTPError as exc:
            raise StorageUnavailableError(
                f"cannot reach Supabase at {self.url} ({function}): {type(exc).__name__}: {exc}"
            ) from exc
        except APIError as exc:
            raise map_api_error(function, exc) from exc


_PERMISSION_CODES = {"42501", "401", "403", "PGRST300", "PGRST301", "PGRST302", "PGRST303"}
_SCHEMA_CODES = {"PGRST202", "PGRST203", "PGRST205", "42883", "42P01", "404"}


def map_api_error(function: str, exc: APIError) -> StorageError:
    """Turn a PostgREST error into the library's error type, with the fix in the message."""
    code = str(exc.code or "")
    detail = f"{exc.message or 'error'} (code {code or 'none'})"
    if code in _PERMISSION_CODES or code.startswith("28"):
        return StoragePermissionError(
            f"Supabase refused {function}: {detail}. Use the service-role key "
            "(secret key, sb_secret_...) in SUPABASE_KEY: the anon/publishable key "
            "and user tokens cannot reach conversation_threads."
        )
    if code in _SCHEMA_CODES:
        return StorageSchemaError(
            f"Supabase has no usable {function}(): {detail}. Apply the files of sql/ "
            f"in order (schema version {SCHEMA_VERSION}) in the SQL editor or with the "
            "migrate command, then reload PostgREST's schema cache (NOTIFY pgrst, 'reload schema')."
        )
    if code.startswith(("08", "53", "57P", "5")) or code in {"503", "502", "504", "520"}:
        return StorageUnavailableError(f"Supabase could not run {function}: {detail}")
    if code.startswith("22"):
        return StorageValueError(f"Supabase rejected the arguments of {function}: {detail}")
    return StorageError(f"Supabase failed to run {function}: {detail}")
