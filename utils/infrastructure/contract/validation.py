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
from typing import Any, NamedTuple, overload

import orjson

from .errors import StorageTypeError, StorageValueError
from .json_envelope import note_json
from .json_numbers import _STRING, check_numbers

MAX_KEY_BYTES = 512
# Postgres `integer`, the type of thread_set's p_ttl_seconds (about 68 years)
# and of the SQL functions' limits and batch sizes: a larger number would be
# refused by the server (or by SQLite, or not at all by memory) differently.
MAX_SQL_INT = 2**31 - 1
MAX_TTL_SECONDS = MAX_SQL_INT
DEFAULT_MAX_VALUE_BYTES = 8 * 1024 * 1024
MAX_METADATA_BYTES = 64 * 1024
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
    # check_value raised unless value is a str; it answers whether it is JSON, not the value.
    return SetArgs(key, seconds, value, check_user_id(user_id), check_metadata(metadata))  # type: ignore[arg-type]


class UpdateArgs(NamedTuple):
    """The validated arguments of an update, but for the value ``fn`` computes."""

    key: str
    ttl_seconds: int
    user_id: str | None
    metadata: dict[str, Any] | None
    max_attempts: int


def validate_update(
    key: object, fn: object, ttl: object, user_id: object, metadata: object, max_attempts: object
) -> UpdateArgs:
    """Check everything but the new value before the first read, so bad input never runs ``fn``."""
    key = check_key(key)
    if not callable(fn):
        raise StorageTypeError(f"fn must be callable, got {type(fn).__name__}")
    seconds = ttl_to_seconds(ttl)
    attempts = _require_int(max_attempts, "max_attempts")
    if attempts <= 0:
        raise StorageValueError(f"max_attempts must be a positive int, got {max_attempts!r}")
    return UpdateArgs(key, seconds, check_user_id(user_id), check_metadata(metadata), attempts)


def check_batch_size(batch_size: object) -> int:
    return _sql_int(batch_size, "batch_size", 1)


def check_limit(limit: object) -> int:
    """A listing limit; 0 lists nothing."""
    return _sql_int(limit, "limit", 0)


def _sql_int(number: object, name: str, minimum: int) -> int:
    checked = _require_int(number, name)
    if not minimum <= checked <= MAX_SQL_INT:
        raise StorageValueError(f"{name} must be an int from {minimum} to {MAX_SQL_INT}, got {number!r}")
    return checked


def _require_int(number: object, name: str) -> int:
    # bool is an int subclass, but True as a count or lifetime is a mistake.
    if isinstance(number, bool) or not isinstance(number, int):
        raise StorageTypeError(f"{name} must be an int, got {type(number).__name__} {number!r}")
    return number


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
        raise StorageTypeError(
            f"ttl_seconds must be a positive int or timedelta, got {type(ttl).__name__} {ttl!r}"
        )
    if seconds <= 0:
        raise StorageValueError(f"ttl_seconds must be positive, got {ttl!r}")
    if seconds > MAX_TTL_SECONDS:
        raise StorageValueError(
            f"ttl_seconds must be at most {MAX_TTL_SECONDS} (about 68 years), got {seconds}"
        )
    return seconds


def check_value(value: object, max_bytes: int) -> bool:
    """Raise unless every backend can store ``value``; True when it is JSON.

    Any str is a value. One orjson reads is a JSON document (RFC 8259,
    nesting at most 1024 deep), kept as JSONB where the backend has it; its
    numbers must read back alike from every backend (json_numbers.py). Every
    other str is text, kept exactly: the Postgres and Supabase backends wrap
    it, and a document holding a NUL, in an envelope (json_envelope.py).
    Refused are text UTF-8 cannot encode (a lone surrogate: no store takes
    it, Redis neither), more than ``max_bytes``, and JSON whose numbers break
    the rule, whether orjson reads it or not (``1e400``).
    """
    if not isinstance(value, str):
        raise StorageTypeError(f"value must be a str, got {type(value).__name__}")
    # Measuring the exact UTF-8 size copies the value; skip it whenever the
    # character count alone proves the answer.
    size = len(value)
    if size > max_bytes:
        _raise_too_large(size, max_bytes)
    if not value.isascii():
        size *= _MAX_UTF8_BYTES_PER_CHAR  # an upper bound is enough below the limit
        if size > max_bytes:
            size = len(_encode_utf8(value, "value"))
            if size > max_bytes:
                _raise_too_large(size, max_bytes)
    try:
        orjson.loads(value)
    except orjson.JSONDecodeError:
        if not value.isascii():
            _encode_utf8(value, "value")
        if _is_json_grammar(value):
            check_numbers(value, max_bytes, size_bound=size)
        document = False
    else:
        check_numbers(value, max_bytes, size_bound=size, ints=False)
        document = True
    note_json(value, document)
    return document


def _no_constant(name: str) -> object:
    raise ValueError(f"{name} is not JSON")


# Python's reader, for what orjson refused: it reads numbers beyond a double
# (which the number rule refuses, as it always did) and escaped lone
# surrogates, which leave the text JSON but not JSONB. Not NaN or Infinity.
_GRAMMAR = json.JSONDecoder(parse_float=str, parse_int=str, parse_constant=_no_constant)
_BRACKET = re.compile(r"[\[\]{}]")
_MAX_DEPTH = 1024  # orjson's, which no other reader may exceed


def _is_json_grammar(text: str) -> bool:
    """True when ``text`` is one RFC 8259 document nested at most 1024 deep."""
    try:
        _GRAMMAR.decode(text)
    except (ValueError, RecursionError):
        return False
    depth = 0
    for bracket in _BRACKET.findall(_STRING.sub('""', text)):
        depth += 1 if bracket in "[{" else -1
        if depth > _MAX_DEPTH:
            return False
    return True


# A str stays a str (or raises): callers that checked for None keep a str.
@overload
def check_user_id(user_id: str) -> str: ...


@overload
def check_user_id(user_id: object) -> str | None: ...


def check_user_id(user_id: object) -> str | None:
    if user_id is None:
        return None
    if not isinstance(user_id, str):
        raise StorageTypeError(f"user_id must be a str or None, got {type(user_id).__name__}")
    return check_key(user_id)


def check_owner(user_id: object) -> str:
    """The user_id of delete_user_threads: as any user_id, but required."""
    if user_id is None:
        raise StorageTypeError("user_id must be a str")
    return check_user_id(user_id)  # type: ignore[return-value]


def check_metadata(metadata: object) -> dict[str, Any] | None:
    """Return a private copy of ``metadata`` if every backend can store it, else raise.

    The standard encoder with ``allow_nan=False`` is the one the Supabase
    client sends with, so what passes here also passes there. Something JSON
    has no type for (a set, a datetime) is a type error; NaN, an infinity or a
    circular reference is an unacceptable value, as NaN in ``value`` is.
    """
    if metadata is None:
        return None
    if not isinstance(metadata, dict):
        raise StorageTypeError(f"metadata must be a dict or None, got {type(metadata).__name__}")
    try:
        text = json.dumps(metadata, ensure_ascii=False, allow_nan=False)
    except TypeError as exc:
        raise StorageTypeError(f"metadata is not a plain JSON object: {exc}") from None
    except ValueError as exc:
        raise StorageValueError(f"metadata is not valid JSON: {exc}") from None
    except RecursionError:
        raise StorageValueError("metadata is nested too deeply") from None
    size = len(_encode_utf8(text, "metadata"))
    if size > MAX_METADATA_BYTES:
        raise StorageValueError(
            f"metadata must be at most {MAX_METADATA_BYTES} bytes as JSON, got {size}"
        )
    # Stored as JSONB too, and read back with every listed thread.
    check_numbers(text, MAX_METADATA_BYTES, "metadata", size_bound=size)
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
            f"{what} is not valid Unicode text ({exc.reason} at position {exc.start}): "
            "UTF-8, which every store keeps text in, cannot encode it"
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
