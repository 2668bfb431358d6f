"""Input rules shared by every backend.

They run before anything is sent or stored, so a value the remote store would
refuse is refused everywhere, the in-memory backend included: code that works
in development must work in production.
"""

from __future__ import annotations

import json
import math
import re
from datetime import timedelta
from typing import Any, NamedTuple

import orjson

from .errors import StorageTypeError, StorageValueError

MAX_KEY_BYTES = 512
# Postgres `integer`, the type of thread_set's p_ttl_seconds (about 68 years).
MAX_TTL_SECONDS = 2**31 - 1
DEFAULT_MAX_VALUE_BYTES = 8 * 1024 * 1024
MAX_METADATA_BYTES = 64 * 1024
# A compiled pattern finds this literal about twice as fast as `in` does.
_NUL_ESCAPE = re.compile(r"\\u0000")
# UTF-8 needs at most this many bytes for one code point.
_MAX_UTF8_BYTES_PER_CHAR = 4


class SetArgs(NamedTuple):
    """The validated arguments of a set, ready for any backend."""

    key: str
    ttl_seconds: int
    value: str
    user_id: str | None
    metadata: dict[str, Any] | None


def validate_set(
    key: object, ttl: object, value: object, user_id: object, metadata: object, max_value_bytes: int
) -> SetArgs:
    """Check every argument of a set; raise on the first bad one."""
    key = check_key(key)
    seconds = ttl_to_seconds(ttl)
    check_value(value, max_value_bytes)
    return SetArgs(key, seconds, value, check_user_id(user_id), check_metadata(metadata))  # type: ignore[arg-type]


def check_batch_size(batch_size: object) -> int:
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size <= 0:
        raise StorageValueError(f"batch_size must be a positive int, got {batch_size!r}")
    return batch_size


def check_key(key: object) -> str:
    """Return ``key`` if it is a usable thread key, else raise."""
    if not isinstance(key, str):
        raise StorageTypeError(f"key must be a str, got {type(key).__name__}")
    if key.isascii():
        # ASCII is the common case (thread:{uuid}); its byte length is its length.
        if not key or len(key) > MAX_KEY_BYTES:
            raise StorageValueError(
                f"key must be 1 to {MAX_KEY_BYTES} bytes of UTF-8, got {len(key)} bytes"
            )
        if "\x00" in key:
            raise StorageValueError("key must not contain NUL characters (\\x00)")
        return key
    size = len(_encode_utf8(key, "key"))
    if size > MAX_KEY_BYTES:
        raise StorageValueError(
            f"key must be 1 to {MAX_KEY_BYTES} bytes of UTF-8, got {size} bytes"
        )
    if "\x00" in key:
        raise StorageValueError("key must not contain NUL characters (\\x00)")
    return key


def ttl_to_seconds(ttl: object) -> int:
    """Return the TTL as whole seconds, as Redis SETEX accepts it.

    A ``timedelta`` with a fraction of a second is rounded up, so an entry
    never expires earlier than asked.
    """
    if isinstance(ttl, bool):
        raise StorageTypeError("ttl_seconds must be an int or timedelta, not bool")
    if isinstance(ttl, int):
        seconds = int(ttl)
    elif isinstance(ttl, timedelta):
        seconds = math.ceil(ttl.total_seconds())
    else:
        raise StorageValueError(
            f"ttl_seconds must be a positive int or timedelta, got {type(ttl).__name__} {ttl!r}"
        )
    if seconds <= 0:
        raise StorageValueError(f"ttl_seconds must be positive, got {ttl!r}")
    if seconds > MAX_TTL_SECONDS:
        raise StorageValueError(
            f"ttl_seconds must be at most {MAX_TTL_SECONDS} (about 68 years), got {seconds}"
        )
    return seconds


def check_value(value: object, max_bytes: int) -> None:
    """Raise unless ``value`` is one JSON document that every backend can store."""
    if not isinstance(value, str):
        raise StorageTypeError(
            f"value must be a str holding a JSON document, got {type(value).__name__}"
        )
    # Measuring the exact UTF-8 size copies the value; skip it whenever the
    # character count alone proves the answer.
    if len(value) > max_bytes:
        _raise_too_large(len(value), max_bytes)
    if len(value) * _MAX_UTF8_BYTES_PER_CHAR > max_bytes and not value.isascii():
        size = len(_encode_utf8(value, "value"))
        if size > max_bytes:
            _raise_too_large(size, max_bytes)
    try:
        document = orjson.loads(value)
    except orjson.JSONDecodeError as exc:
        raise StorageValueError(f"value is not valid JSON: {exc}") from None
    # The parser accepts the escape \u0000, which Postgres JSONB cannot store.
    # The text search is cheap; the walk only runs when the escape may be there.
    if _NUL_ESCAPE.search(value) and _contains_nul(document):
        raise StorageValueError(
            "value contains a NUL character (\\u0000), which PostgreSQL JSONB cannot store"
        )


def check_user_id(user_id: object) -> str | None:
    if user_id is None:
        return None
    if not isinstance(user_id, str):
        raise StorageTypeError(f"user_id must be a str or None, got {type(user_id).__name__}")
    return check_key(user_id)


def check_metadata(metadata: object) -> dict[str, Any] | None:
    """Return a private copy of ``metadata`` if every backend can store it, else raise.

    The standard encoder with ``allow_nan=False`` is the one the Supabase
    client sends with, so what passes here also passes there.
    """
    if metadata is None:
        return None
    if not isinstance(metadata, dict):
        raise StorageTypeError(f"metadata must be a dict or None, got {type(metadata).__name__}")
    try:
        text = json.dumps(metadata, ensure_ascii=False, allow_nan=False)
    except (TypeError, ValueError) as exc:
        raise StorageTypeError(f"metadata is not a plain JSON object: {exc}") from None
    size = len(_encode_utf8(text, "metadata"))
    if size > MAX_METADATA_BYTES:
        raise StorageValueError(
            f"metadata must be at most {MAX_METADATA_BYTES} bytes as JSON, got {size}"
        )
    copy = json.loads(text)
    if _contains_nul(copy):
        raise StorageValueError(
            "metadata contains a NUL character, which PostgreSQL JSONB cannot store"
        )
    return copy


def _encode_utf8(text: str, what: str) -> bytes:
    try:
        return text.encode("utf-8")
    except UnicodeEncodeError as exc:
        raise StorageValueError(
            f"{what} is not valid Unicode text: {exc.reason} at position {exc.start}"
        ) from None


def _raise_too_large(size: int, max_bytes: int) -> None:
    raise StorageValueError(
        f"value is {size} bytes, more than the limit of {max_bytes} bytes "
        "(raise CONVERSATION_MAX_VALUE_BYTES to allow larger threads)"
    )


def _contains_nul(node: object) -> bool:
    stack = [node]
    while stack:
        item = stack.pop()
        if isinstance(item, str):
            if "\x00" in item:
                return True
        elif isinstance(item, dict):
            for k, v in item.items():
                if isinstance(k, str) and "\x00" in k:
                    return True
                stack.append(v)
        elif isinstance(item, list):
            stack.extend(item)
    return False
