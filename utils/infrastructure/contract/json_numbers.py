"""The number rule: a document's numbers must read back alike from every backend.

Memory and SQLite keep the caller's text. PostgreSQL's JSONB (the Postgres
and Supabase backends) parses every number into ``numeric`` and prints it
back in plain notation, with as many digits after the point as were written
minus the exponent (never fewer than none): ``1.0E+2`` reads back as
``100``, ``1.50`` as ``1.50``, ``1e-5`` as ``0.00001``, ``1e300`` as 301
digits. ``1e-16383``, eight bytes, reads back as 16,385; a few thousand of
them make a thread that is stored but can never be read again.

So, on every backend, a document is refused when it holds

- a number other than 0 that a double cannot hold: orjson already refuses one
  that overflows to infinity (about 1.8e308 or more); one that underflows to
  0 (below about 2.5e-324) is refused here. Most JSON readers, JavaScript's
  included, read numbers as doubles, so nothing they could read is lost,
  and in this range a number prints at most about 330 bytes longer than
  written (a 0 with an exponent can print longer: the limit below covers it);
- a number ``numeric`` cannot hold: more than 16383 digits after the point
  (``0e-16384``), or an exponent of 1073741823 or more either way (``0e1073741823``);
- more bytes, as JSONB prints it, than the limit: ``get`` would return more
  than ``set`` accepts, and an ``update`` writing it back would fail. JSONB
  also drops whitespace and writes ``", "`` and ``": "`` between items;
  strings never get longer. Escapes it shortens and repeated keys it drops
  are counted as written, so the size is a bound, not a measurement.

Every number of the text counts, those of a repeated key's dropped values
too: Postgres parses them all. So the rule reads the number tokens of the
text, never the parsed document, where such values are gone.
"""

from __future__ import annotations

import json
import math
import re
import threading
from collections import Counter

from .errors import StorageValueError

#: numeric's largest display scale (digits after the point).
MAX_SCALE = 16383
#: numeric_in refuses an exponent this large, whatever the digits.
MAX_EXPONENT = 1073741823
# Without an exponent and shorter than this, a number is 0 or between 1e-300
# and 1e300 in magnitude, and JSONB prints it as written or shorter.
_LONG = 300

_RISKY = re.compile(r"-?[0-9]+(?:\.[0-9]+)?[eE][-+]?[0-9]+|-?[0-9.]{" + str(_LONG) + ",}")
_PARTS = re.compile(r"-?([0-9]+)(?:\.([0-9]+))?(?:[eE]([-+]?[0-9]+))?")
# Valid JSON only: a string is quote, non-quotes and escapes, quote.
_STRING = re.compile(r'"[^"\\]*(?:\\.[^"\\]*)*"')

# Where a risky token may be, found without reading the tokens: its UTF-8
# bytes with only these kept, as classes. A number token with an exponent
# then reads "s0...0e": before a value come "[", "," or ":" ("s", whitespace
# dropped); its sign, digits and point are "0"; then "e" or "E". A token
# without one is risky only with 300 of those in a row. Dropping the rest
# joins bytes it separated, so more may be found, never less; a quote ("q")
# stays, or every string starting with a digit would be found. Whatever is
# found (in a string too) has the tokens read.
_KEPT = {
    **dict.fromkeys(b"0123456789.-", ord("0")),
    **dict.fromkeys(b"eE", ord("e")),
    **dict.fromkeys(b"[,:", ord("s")),
    ord('"'): ord("q"),
}
_CLASSES = bytes(_KEPT.get(c, c) for c in range(256))
_DROPPED = bytes(c for c in range(256) if c not in _KEPT)
_EXPONENT_AFTER_VALUE_START = re.compile(rb"s00*e")
# Under 100 bytes, a needle is searched for without first being analysed.
_PART_OF_LONG = b"0" * 99
_AS_LONG = b"0" * _LONG


def check_numbers(
    text: str, max_bytes: int, what: str = "value", *, size_bound: int | None = None, ints: bool = True
) -> None:
    """Raise unless every number of the valid JSON ``text`` passes the rule.

    ``size_bound``, the text's UTF-8 size or more, saves measuring it;
    ``ints=False`` skips integers, for a text orjson has read (it refuses
    those beyond a double, and shorter ones print as written).
    """
    risky = _risky_tokens(text, ints)
    growth = sum(_growth(token, what) * count for token, count in Counter(risky).items()) if risky else 0
    # Cheapest bound first: at most one separator every two bytes gains a space.
    size = size_bound or (len(text) if text.isascii() else len(text) * 4)
    if size + size // 2 + growth <= max_bytes:
        return
    size = len(text.encode("utf-8"))
    if size + text.count(",") + text.count(":") + growth <= max_bytes:
        return
    skeleton = _STRING.sub('""', text)
    spaces = sum(map(skeleton.count, " \t\n\r"))
    printed = size - spaces + skeleton.count(",") + skeleton.count(":") + growth
    if printed > max_bytes:
        raise StorageValueError(
            f"{what} would read back from PostgreSQL as up to {printed} bytes, more than the limit of "
            f"{max_bytes} bytes: JSONB writes numbers out in full (1e300 as 301 digits) and puts a "
            "space after every comma and colon"
        )


class _Scanners(threading.local):
    """The standard library's scanner, which hands over numbers as written; one per thread."""

    def __init__(self) -> None:
        self.tokens: list[str] = []
        keep = self.tokens.append
        self.floats = json.JSONDecoder(parse_float=keep)
        self.numbers = json.JSONDecoder(parse_float=keep, parse_int=keep)


_scanners = _Scanners()


def _risky_tokens(text: str, ints: bool) -> list[str]:
    """The number tokens that may print longer than written or break the rule."""
    if not _may_hold_risky(text):
        return []
    tokens = _scanners.tokens
    try:
        (_scanners.numbers if ints else _scanners.floats).decode(text)
        # The same tokens as _RISKY finds, so both ways give the same answer.
        return [t for t in tokens if "e" in t or "E" in t or len(t.lstrip("-")) >= _LONG]
    except RecursionError:  # nested deeper than Python's recursion limit
        return _RISKY.findall(_STRING.sub('""', text))
    finally:
        tokens.clear()


def _may_hold_risky(text: str) -> bool:
    """False only when no number token of the valid JSON ``text`` is risky.

    Nearly every document has neither an exponent nor 300 digits in a row,
    and finding so costs a fraction of reading every token.
    """
    # Cheap after orjson has read the text: it keeps the UTF-8 with the str.
    classes = text.encode("utf-8", "surrogatepass").translate(_CLASSES, _DROPPED)
    return (
        classes.startswith(b"0")  # the text is a number
        or _EXPONENT_AFTER_VALUE_START.search(classes) is not None
        or (_PART_OF_LONG in classes and _AS_LONG in classes)
    )


def _growth(token: str, what: str) -> int:
    """How many bytes longer JSONB prints ``token`` than it is written; raise if it breaks the rule."""
    # A token is a number the scanner matched, and _PARTS matches every JSON number.
    whole, fraction, exponent = _PARTS.fullmatch(token).groups()  # type: ignore[union-attr]
    fraction = fraction or ""
    shift = 0
    if exponent:
        digits = exponent.lstrip("+-").lstrip("0") or "0"
        # The length first: int() refuses thousands of digits.
        if len(digits) > len(str(MAX_EXPONENT)) or int(digits) >= MAX_EXPONENT:
            raise _refused(what, token, f"its exponent is beyond PostgreSQL's limit of {MAX_EXPONENT - 1}")
        shift = -int(digits) if exponent.startswith("-") else int(digits)
    significant = (whole + fraction).lstrip("0")
    if significant:
        as_double = float(token)
        if as_double == 0.0:
            raise _refused(what, token, "it is too close to 0 for a double (below about 2.5e-324)")
        if math.isinf(as_double):
            raise _refused(what, token, "it is too large for a double (about 1.8e308 or more)")
    scale = max(0, len(fraction) - shift)
    if scale > MAX_SCALE:
        reason = f"PostgreSQL would keep {scale} digits after its decimal point, more than {MAX_SCALE}"
        raise _refused(what, token, reason)
    integer_digits = 1
    if significant:
        # The power of ten of the first significant digit.
        first = len(whole) - 1 - (len(whole) + len(fraction) - len(significant)) + shift
        integer_digits = max(first + 1, 1)
    negative = token.startswith("-") and bool(significant)  # numeric has no -0
    printed = negative + integer_digits + (scale + 1 if scale else 0)
    return printed - len(token)


def _refused(what: str, token: str, reason: str) -> StorageValueError:
    shown = token if len(token) <= 40 else f"{token[:20]}...{token[-12:]} ({len(token)} characters)"
    return StorageValueError(f"{what} holds the number {shown}, which cannot be stored: {reason}")
