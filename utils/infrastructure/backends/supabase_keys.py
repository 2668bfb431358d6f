"""Telling Supabase API keys apart before any request is made.

Only a key acting as ``service_role`` can reach the threads (RLS on, EXECUTE
for service_role only). A publishable or anon key would fail on every call
with a permission error that does not say why, so it is named and refused up
front. Legacy JWT keys are decoded without verification: the claims are only
read to name the key, the server still checks the signature.
"""

from __future__ import annotations

import base64
import binascii
import json
from dataclasses import dataclass

from ..contract.errors import StoragePermissionError

SECRET_PREFIX = "sb_secret_"
PUBLISHABLE_PREFIX = "sb_publishable_"

_WHERE = "Supabase dashboard > Project Settings > API Keys"
_USE_INSTEAD = f"set SUPABASE_KEY to the project's secret key (sb_secret_..., {_WHERE})"


@dataclass(frozen=True)
class KeyKind:
    name: str
    #: True when the key acts as service_role; None when its role cannot be told.
    service_role: bool | None
    legacy: bool = False


def describe_key(key: str) -> KeyKind:
    """What kind of Supabase API key ``key`` is."""
    if key.startswith(SECRET_PREFIX):
        return KeyKind("secret key (sb_secret_...)", True)
    if key.startswith(PUBLISHABLE_PREFIX):
        return KeyKind("publishable key (sb_publishable_...)", False)
    role = _jwt_role(key)
    if role is None:
        return KeyKind("key of unknown format", None)
    if role == "service_role":
        return KeyKind("legacy service_role JWT key", True, legacy=True)
    return KeyKind(f"legacy JWT key of role {role!r}", False, legacy=True)


def require_service_key(key: str) -> KeyKind:
    """Return the kind of ``key``; raise if it certainly cannot reach the threads."""
    kind = describe_key(key)
    if kind.service_role is False:
        raise StoragePermissionError(
            f"SUPABASE_KEY is a {kind.name}: it acts as the anon (or a user's) role, which "
            f"row level security and the function grants keep away from conversation_threads. "
            f"{_USE_INSTEAD[0].upper()}{_USE_INSTEAD[1:]}; keep it on the server."
        )
    return kind


def legacy_key_advice(kind: KeyKind) -> str | None:
    """A warning for keys Supabase is retiring, or None."""
    if not kind.legacy:
        return None
    return (
        f"SUPABASE_KEY is a {kind.name}; Supabase retires legacy JWT API keys by the end of 2026: "
        f"{_USE_INSTEAD} before they stop working"
    )


def _jwt_role(key: str) -> str | None:
    parts = key.split(".")
    if len(parts) != 3:
        return None
    try:
        payload = base64.urlsafe_b64decode(parts[1] + "=" * (-len(parts[1]) % 4))
        claims = json.loads(payload)
    except (binascii.Error, ValueError):
        return None
    if not isinstance(claims, dict):
        return None
    role = claims.get("role")
    return str(role) if role is not None else "anon"
