"""Configuration from environment variables (and a ``.env`` file)."""

from __future__ import annotations

import logging
import math
import os
from collections.abc import Mapping
from dataclasses import dataclass

from dotenv import dotenv_values, find_dotenv

from ..backends.supabase_keys import describe_key
from ..contract.errors import StorageConfigurationError
from ..contract.validation import DEFAULT_MAX_VALUE_BYTES

BACKENDS = ("memory", "supabase", "postgres", "sqlite")
POOLER_MODES = ("auto", "true", "false")
_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off", ""}
#: The variables this library reads; a .env file contributes these and nothing else.
OWN_VARIABLES = (
    "CONVERSATION_STORAGE_BACKEND", "SUPABASE_URL", "SUPABASE_KEY", "SUPABASE_SERVICE_ROLE_KEY",
    "CONVERSATION_TIMEOUT_HOURS", "CONVERSATION_MAX_VALUE_BYTES", "CONVERSATION_STORAGE_STRICT",
    "CONVERSATION_STORAGE_TIMEOUT_SECONDS", "DATABASE_URL", "SUPABASE_DB_URL",
    "CONVERSATION_POSTGRES_POOL_MIN", "CONVERSATION_POSTGRES_POOL_MAX", "CONVERSATION_POSTGRES_TRANSACTION_POOLER",
    "CONVERSATION_SQLITE_PATH", "CONVERSATION_SQLITE_SYNCHRONOUS", "CONVERSATION_STORAGE_FAILOVER",
    "CONVERSATION_SPOOL_PATH", "CONVERSATION_NEAR_CACHE",
)
DEFAULT_TIMEOUT_HOURS = 3.0

logger = logging.getLogger("conversation_storage")


@dataclass(frozen=True)
class Settings:
    backend: str = "memory"
    supabase_url: str | None = None
    supabase_key: str | None = None
    timeout_hours: float = 3.0
    max_value_bytes: int = DEFAULT_MAX_VALUE_BYTES
    strict: bool = False
    request_timeout_seconds: float = 10.0
    database_url: str | None = None
    postgres_pool_min: int = 1
    postgres_pool_max: int = 10
    #: None: decide from the port (6543: Supabase's transaction pooler; 6432: PgBouncer's).
    transaction_pooler: bool | None = None
    sqlite_path: str | None = None
    sqlite_synchronous: str = "full"
    #: Spool writes locally while a remote store is down (supabase, postgres).
    failover: bool = True
    spool_path: str | None = None
    #: Remember the threads this process read or wrote, to send less (supabase, postgres);
    #: None: only when the server is not on this machine.
    near_cache: bool | None = None
    #: CONVERSATION_STORAGE_BACKEND as it was set, when it named no backend of ours (it runs on memory).
    unknown_backend: str | None = None

    @property
    def ttl_seconds(self) -> int:
        """The conversation lifetime callers use with setex (CONVERSATION_TIMEOUT_HOURS)."""
        return max(1, int(self.timeout_hours * 3600))


def load_settings(environ: Mapping[str, str] | None = None) -> Settings:
    """Read settings from ``environ`` (default: ``os.environ`` and a ``.env`` file).

    A ``.env`` file found from the working directory upwards fills in this
    library's own variables where the environment does not set them. It is
    read, never exported: the process environment stays as it was, and the
    file's other variables (a project's API keys) are not even kept.
    """
    if environ is None:
        environ = _with_dotenv(os.environ)
    strict = _flag(environ, "CONVERSATION_STORAGE_STRICT")
    return Settings(
        backend=_backend(environ, strict),
        unknown_backend=_unknown_backend(environ),
        supabase_url=_text(environ, "SUPABASE_URL"),
        supabase_key=_supabase_key(environ),
        timeout_hours=_timeout_hours(environ),
        max_value_bytes=_positive(environ, "CONVERSATION_MAX_VALUE_BYTES", DEFAULT_MAX_VALUE_BYTES, int),
        strict=strict,
        request_timeout_seconds=_positive(environ, "CONVERSATION_STORAGE_TIMEOUT_SECONDS", 10.0, float),
        database_url=_text(environ, "DATABASE_URL") or _text(environ, "SUPABASE_DB_URL"),
        postgres_pool_min=_positive(environ, "CONVERSATION_POSTGRES_POOL_MIN", 1, int),
        postgres_pool_max=_positive(environ, "CONVERSATION_POSTGRES_POOL_MAX", 10, int),
        transaction_pooler=_pooler(environ),
        sqlite_path=_path(environ, "CONVERSATION_SQLITE_PATH"),
        sqlite_synchronous=_choice(environ, "CONVERSATION_SQLITE_SYNCHRONOUS", ("full", "normal", "extra"), "full"),
        failover=_flag(environ, "CONVERSATION_STORAGE_FAILOVER", default=True),
        spool_path=_path(environ, "CONVERSATION_SPOOL_PATH"),
        near_cache=_optional_flag(environ, "CONVERSATION_NEAR_CACHE"),
    )


#: Values other daemons give the same variable, and the backend of ours that serves them.
#: EX-AI's ``dual`` keeps threads in memory and in Supabase: Supabase is the durable half.
BACKEND_ALIASES = {"dual": "supabase"}


def _backend(environ: Mapping[str, str], strict: bool) -> str:
    """The backend named by CONVERSATION_STORAGE_BACKEND; a daemon never crashes on a value it does not know."""
    backend = _requested_backend(environ)
    if backend in BACKENDS:
        return backend
    accepted = ", ".join(BACKENDS)
    if backend in BACKEND_ALIASES and not strict:
        logger.warning("CONVERSATION_STORAGE_BACKEND=%s is read as %s (accepted values: %s)",
                       backend, BACKEND_ALIASES[backend], accepted)
        return BACKEND_ALIASES[backend]
    message = f"CONVERSATION_STORAGE_BACKEND={backend!r} is not a known backend; use one of: {accepted}"
    if strict:
        raise StorageConfigurationError(message)
    logger.warning("%s -- using memory: conversation threads will NOT survive a restart of this process", message)
    return "memory"


def _unknown_backend(environ: Mapping[str, str]) -> str | None:
    value = _requested_backend(environ)
    return None if value in BACKENDS or value in BACKEND_ALIASES else value


def _requested_backend(environ: Mapping[str, str]) -> str:
    return environ.get("CONVERSATION_STORAGE_BACKEND", "memory").strip().lower() or "memory"


def _supabase_key(environ: Mapping[str, str]) -> str | None:
    """SUPABASE_KEY, unless it is a public key and the service key is set under its own name.

    Some daemons' templates put the anon (or publishable) key in SUPABASE_KEY
    for their browser side and the service key in SUPABASE_SERVICE_ROLE_KEY.
    """
    key, service_key = _text(environ, "SUPABASE_KEY"), _text(environ, "SUPABASE_SERVICE_ROLE_KEY")
    if key is None or (service_key is not None and describe_key(key).service_role is False):
        return service_key
    return key


def _with_dotenv(environ: Mapping[str, str]) -> Mapping[str, str]:
    path = find_dotenv(usecwd=True)
    if not path:
        return environ
    from_file = {name: value for name, value in dotenv_values(path).items()
                 if name in OWN_VARIABLES and value is not None and name not in environ}
    return {**environ, **from_file} if from_file else environ


def _timeout_hours(environ: Mapping[str, str]) -> float:
    # Daemons of the pal family warn and keep their default for a bad value
    # instead of failing every conversation; so do we.
    raw = environ.get("CONVERSATION_TIMEOUT_HOURS", "").strip()
    if not raw:
        return DEFAULT_TIMEOUT_HOURS
    try:
        hours = float(raw)
    except ValueError:
        hours = math.nan
    if not (hours > 0 and math.isfinite(hours)):
        logger.warning("CONVERSATION_TIMEOUT_HOURS=%r is not a positive number of hours: using %g",
                       raw, DEFAULT_TIMEOUT_HOURS)
        return DEFAULT_TIMEOUT_HOURS
    return hours


def _text(environ: Mapping[str, str], name: str) -> str | None:
    value = environ.get(name, "").strip()
    return value or None


def _path(environ: Mapping[str, str], name: str) -> str | None:
    # A shell expands ~ in a command line, never in a .env file or a systemd Environment=.
    value = _text(environ, name)
    return os.path.expanduser(value) if value else None


def _positive(environ: Mapping[str, str], name: str, default, kind):
    raw = environ.get(name, "").strip()
    if not raw:
        return default
    try:
        value = kind(raw)
    except ValueError:
        raise StorageConfigurationError(
            f"{name}={raw!r} is not a valid {'whole ' if kind is int else ''}number"
        ) from None
    if not value > 0 or value == float("inf"):
        raise StorageConfigurationError(f"{name}={raw!r} must be a positive number")
    return value


def _pooler(environ: Mapping[str, str]) -> bool | None:
    mode = _choice(environ, "CONVERSATION_POSTGRES_TRANSACTION_POOLER", POOLER_MODES, "auto")
    return None if mode == "auto" else mode == "true"


def _choice(environ: Mapping[str, str], name: str, choices: tuple[str, ...], default: str) -> str:
    raw = environ.get(name, "").strip().lower() or default
    if raw not in choices:
        raise StorageConfigurationError(f"{name}={raw!r} must be one of: {', '.join(choices)}")
    return raw


def _flag(environ: Mapping[str, str], name: str, default: bool = False) -> bool:
    flag = _optional_flag(environ, name)
    return default if flag is None else flag


def _optional_flag(environ: Mapping[str, str], name: str) -> bool | None:
    """True or false as set; None when unset."""
    raw = environ.get(name, "").strip().lower()
    if not raw:
        return None
    if raw in _TRUE:
        return True
    if raw in _FALSE:
        return False
    raise StorageConfigurationError(f"{name}={raw!r} must be true or false")
