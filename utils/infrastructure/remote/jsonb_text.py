"""The text PostgreSQL prints for a document stored as JSONB, computed here.

A read of the Postgres and Supabase backends returns the stored JSONB as
PostgreSQL prints it, not as the caller wrote it: keys in JSONB's order
(shorter first, then by their UTF-8 bytes) with repeated keys dropped (the
last one wins), ``", "`` and ``": "`` between items, numbers as ``numeric``
prints them (``1.0E+2`` as ``100``, ``1e-5`` as ``0.00001``, no ``-0``),
strings with only ``"``, ``\\`` and control characters escaped.

The near cache (near_cache.py) returns a thread this process wrote without
reading it back, so it needs that text. :func:`render` computes it; the store
still confirms it once (thread_fetch compares an MD5 of its own printing), so
a difference costs one full read, never a wrong answer.
"""

from __future__ import annotations

import hashlib
import json
import re
from typing import Any

import orjson

from ..contract.json_envelope import note_json

_NUMBER = re.compile(r"(-?)([0-9]+)(?:\.([0-9]+))?(?:[eE]([-+]?[0-9]+))?")
# parse_float leaves a placeholder string, replaced after encoding: neither
# encoder (orjson, json.dumps) writes a number but its own. A NUL cannot occur in a
# document rendered here (those are stored in an envelope, json_envelope.py).
_PLACEHOLDER = re.compile(r'"\\u0000([0-9]+)"')
# orjson's indented output holds a newline only between items (strings escape
# theirs): joined up again, it is JSONB's ", " and ": " spacing.
_ITEM_BREAK = re.compile(rb",\n *")
_BREAK = re.compile(rb"\n *")


def numeric_text(token: str) -> str:
    """How ``numeric`` prints the JSON number ``token``."""
    # Only JSON numbers come here, and _NUMBER matches every one.
    sign, whole, fraction, exponent = _NUMBER.fullmatch(token).groups()  # type: ignore[union-attr]
    fraction = fraction or ""
    digits = whole + fraction
    point = len(whole) + int(exponent or 0)  # where the decimal point falls in digits
    if point <= 0:
        integer, decimals = "0", "0" * -point + digits
    elif point >= len(digits):
        integer, decimals = digits + "0" * (point - len(digits)), ""
    else:
        integer, decimals = digits[:point], digits[point:]
    integer = integer.lstrip("0") or "0"
    negative = sign and digits.strip("0")
    return ("-" if negative else "") + integer + ("." + decimals if decimals else "")


def _jsonb_key(key: str) -> tuple[int, bytes]:
    encoded = key.encode("utf-8", "surrogatepass")
    return len(encoded), encoded


def _in_jsonb_order(keys: list[str]) -> list[str]:
    if "".join(keys).isascii():
        # An ASCII key's length is its byte length, and str order is byte order.
        return sorted(sorted(keys), key=len)
    return sorted(keys, key=_jsonb_key)


def _ordered(value: Any) -> Any:
    """``value`` with every object's keys in JSONB's order (scalars are not called for: it halves the time)."""
    if type(value) is dict:
        keys = list(value)
        if len(keys) > 1:
            keys = _in_jsonb_order(keys)
        ordered = {}
        for key in keys:
            item = value[key]
            kind = type(item)
            ordered[key] = _ordered(item) if kind is dict or kind is list else item
        return ordered
    if type(value) is list:
        return [_ordered(item) if type(item) is dict or type(item) is list else item for item in value]
    return value


def _printed(document: Any) -> str:
    """JSONB's spacing: orjson's indented output joined up (about 3x faster than json.dumps here, joining included)."""
    try:
        indented = orjson.dumps(document, option=orjson.OPT_INDENT_2)
    except TypeError:  # an integer beyond 64 bits, which orjson does not write
        return json.dumps(document, ensure_ascii=False, separators=(", ", ": "))
    return _BREAK.sub(b"", _ITEM_BREAK.sub(b", ", indented)).decode()


def render(text: str) -> str | None:
    """PostgreSQL's printing of ``text`` as JSONB; None when it cannot be computed here."""
    if "\\u0000" in text:
        return None
    numbers: list[str] = []

    def placeholder(token: str) -> str:
        numbers.append(numeric_text(token))
        return f"\x00{len(numbers) - 1}"

    try:
        # A repeated key: json.loads keeps the last value, as JSONB does.
        printed = _printed(_ordered(json.loads(text, parse_float=placeholder)))
    except (ValueError, RecursionError):
        return None
    if numbers:
        printed = _PLACEHOLDER.sub(lambda m: numbers[int(m.group(1))], printed)
    # Used only once the store confirmed it as its own printing of the JSONB
    # it holds, which is JSON: a patch from it need not parse it again.
    note_json(printed, True)
    return printed


def fingerprint(printed: str) -> str:
    """What thread_fetch compares: md5 of the printed text, as PostgreSQL's md5() gives it."""
    return hashlib.md5(printed.encode("utf-8"), usedforsecurity=False).hexdigest()
