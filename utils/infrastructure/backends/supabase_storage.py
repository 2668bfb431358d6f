"""Threads in Supabase, through the official client's RPC calls only.

Each operation is one ``POST /rest/v1/rpc/<function>``: one HTTP request, one
transaction, judged on the database's clock. The SQL in ``sql/`` defines what
each function does; this module only carries arguments and maps errors.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any
from urllib.parse import urlsplit

import httpx
from postgrest.exceptions import APIError
from supabase import AsyncClientOptions, ClientOptions, acreate_client, create_client

from ..contract.errors import StorageConfigurationError, StorageUnavailableError
from ..remote.near_cache import NearCache, local_server
from ..remote.remote_calls import AsyncRemoteFunctionStorage, RemoteFunctionStorage
from .sql_errors import error_for_code, error_for_status
from .supabase_keys import legacy_key_advice, require_service_key

DEFAULT_TIMEOUT_SECONDS = 10.0

logger = logging.getLogger("conversation_storage")


def _timeout(seconds: float) -> httpx.Timeout:
    # The client truncates a float timeout to whole seconds (0.5 -> 0); an
    # httpx client of our own keeps the precision and lets close() free it.
    return httpx.Timeout(seconds, connect=min(seconds, 5.0))


def _check_key(key: str) -> None:
    advice = legacy_key_advice(require_service_key(key))
    if advice:
        logger.warning(advice)


class _GatewayAnswer(Exception):
    """An HTTP error that did not come from PostgREST (Supabase's edge, a CDN, a proxy)."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


def _raise_for_gateway_answer(response: httpx.Response) -> None:
    """Raise :class:`_GatewayAnswer` for an error response without a PostgREST error code.

    The client turns such a body into an APIError without a code or status
    (a 504 ``{"message": "The upstream server is timing out"}`` from the edge,
    an HTML 520 page), so the status is read here, before the client sees it.
    """
    if response.is_success or "postgrest" in response.headers.get("Proxy-Status", "").lower():
        return
    try:
        body = json.loads(response.content)
    except ValueError:
        body = None
    if isinstance(body, dict) and body.get("code"):
        return
    message = body.get("message") if isinstance(body, dict) else None
    raise _GatewayAnswer(response.status_code, str(message or response.reason_phrase or "no message"))


def _check_response(response: httpx.Response) -> None:
    if not response.is_success:
        response.read()
        _raise_for_gateway_answer(response)


async def _acheck_response(response: httpx.Response) -> None:
    if not response.is_success:
        await response.aread()
        _raise_for_gateway_answer(response)


@contextmanager
def _translated_errors(url: str, function: str) -> Iterator[None]:
    try:
        yield
    except _GatewayAnswer as exc:
        raise error_for_status(exc.status, str(exc), operation=function, where=f"Supabase at {url}") from None
    except (httpx.ConnectError, httpx.ConnectTimeout, httpx.PoolTimeout) as exc:
        unsent = StorageUnavailableError(f"cannot reach Supabase at {url} ({function}): {type(exc).__name__}: {exc}")
        unsent.may_run_later = False
        raise unsent from exc
    except httpx.TimeoutException as exc:
        raise StorageUnavailableError(
            f"Supabase did not answer {function} in time at {url}: {type(exc).__name__}"
        ) from exc
    except httpx.HTTPError as exc:
        raise StorageUnavailableError(
            f"cannot reach Supabase at {url} ({function}): {type(exc).__name__}: {exc}"
        ) from exc
    except APIError as exc:
        raise error_for_code(exc.code, exc.message, operation=function, where="Supabase") from exc


def _local_url(url: str) -> bool:
    try:
        return local_server(urlsplit(url).hostname or "")
    except ValueError:
        return False


def _unusable_url(url: str, exc: Exception) -> StorageConfigurationError:
    return StorageConfigurationError(f"SUPABASE_URL={url!r} is not usable by the Supabase client: {exc}")


class SupabaseStorage(RemoteFunctionStorage):
    """Storage backed by the ``conversation_threads`` table of a Supabase project.

    Needs the secret key (``sb_secret_...``) or the legacy service_role JWT:
    the table has RLS on and its functions are executable by ``service_role``
    only. A publishable or anon key is refused before any request is made.
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
        near_cache: bool | NearCache | None = None,
    ) -> None:
        _check_key(key)
        super().__init__(max_value_bytes=max_value_bytes, near_cache=near_cache,
                         local_server=_local_url(url))
        self.url = url
        # PostgREST may start a request after this client gave up on it (it
        # queues for a database connection), but not after the deadline sent.
        self.late_start_seconds = timeout_seconds
        self._http = httpx.Client(
            timeout=_timeout(timeout_seconds), follow_redirects=True, event_hooks={"response": [_check_response]}
        )
        try:
            self._client = create_client(url, key, options=ClientOptions(httpx_client=self._http))
        # The client raises whatever its URL parsing hits; every such failure means an unusable URL.
        except Exception as exc:  # noqa: BLE001
            self._http.close()
            raise _unusable_url(url, exc) from None

    def _call(self, function: str, params: dict[str, Any]) -> Any:
        with _translated_errors(self.url, function):
            return self._client.rpc(function, params).execute().data

    def _close(self) -> None:
        self._http.close()


class AsyncSupabaseStorage(AsyncRemoteFunctionStorage):
    """The asyncio twin of :class:`SupabaseStorage` (the official async client).

    Create it with ``await AsyncSupabaseStorage.create(url, key)``.
    """

    backend_name = "supabase"
    persistent = True

    def __init__(self, url: str, client: Any, http: httpx.AsyncClient, *, max_value_bytes: int | None = None,
                 near_cache: bool | NearCache | None = None):
        super().__init__(max_value_bytes=max_value_bytes, near_cache=near_cache,
                         local_server=_local_url(url))
        self.url = url
        self._client = client
        self._http = http

    @classmethod
    async def create(
        cls,
        url: str,
        key: str,
        *,
        timeout_seconds: float = DEFAULT_TIMEOUT_SECONDS,
        max_value_bytes: int | None = None,
        near_cache: bool | NearCache | None = None,
    ) -> AsyncSupabaseStorage:
        _check_key(key)
        http = httpx.AsyncClient(
            timeout=_timeout(timeout_seconds), follow_redirects=True, event_hooks={"response": [_acheck_response]}
        )
        try:
            client = await acreate_client(url, key, options=AsyncClientOptions(httpx_client=http))
        # The client raises whatever its URL parsing hits; every such failure means an unusable URL.
        except Exception as exc:  # noqa: BLE001
            await http.aclose()
            raise _unusable_url(url, exc) from None
        return cls(url, client, http, max_value_bytes=max_value_bytes, near_cache=near_cache)

    async def _call(self, function: str, params: dict[str, Any]) -> Any:
        with _translated_errors(self.url, function):
            return (await self._client.rpc(function, params).execute()).data

    async def _close(self) -> None:
        await self._http.aclose()
